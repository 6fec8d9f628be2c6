/* A cross-entropy's class-index targets, checked and prepared (core.c's class_targets),
 * included by isa.h once per instruction set: the vector loops compare int64 values and
 * gather class weights, which the baseline instruction set does several times slower. */

/* The sum of cw[y] over y[0:n] (entries in [0, C) or `ignore`, the latter weighing 0), in
 * double, as 8 running sums added pairwise at the end. Scalar: a vector gather measured 2.6x
 * slower (x86-64-v4, AMD). The weights go into a table of doubles where `ignore` and every
 * index from C on weigh 0, so that an entry's weight is table[min(y, C)] (as unsigned: a
 * negative `ignore` is past C): no branch, which a randomly ignored entry would mispredict
 * (2x slower). */
static double NAME(weight_total)(const int64_t *y, ptrdiff_t n, int64_t C, int64_t ignore,
                                 const void *cw, int f64)
{
    double *table = (double *)malloc((size_t)(C + 1) * sizeof(double));
    if (!table)
        return NAN; /* the caller reports the failed allocation */
    for (int64_t c = 0; c < C; c++)
        table[c] = f64 ? ((const double *)cw)[c] : (double)((const float *)cw)[c];
    table[C] = 0;
    if ((uint64_t)ignore < (uint64_t)C)
        table[ignore] = 0;
    const uint64_t last = (uint64_t)C;
    double t[8] = {0};
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            const uint64_t v = (uint64_t)y[i + k];
            t[k] += table[v < last ? v : last];
        }
    }
    for (; i < n; i++) {
        const uint64_t v = (uint64_t)y[i];
        t[0] += table[v < last ? v : last];
    }
    free(table);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* How many of y[0:n] equal `ignore`; *first_bad: the first entry neither in [0, C) nor
 * `ignore` (-1: none); with cw (C doubles when f64, else floats) and no bad entry,
 * *weight_total: the sum of cw[y] over the entries not ignored (the "mean" denominator of
 * weighted targets; NaN when its scratch could not be allocated), else 0. One vectorized
 * pass (a loop that stops at the first bad entry does not vectorize; the entry is looked
 * for only when there is one), and one more for the weights. */
static ptrdiff_t NAME(count_targets)(const int64_t *y, ptrdiff_t n, int64_t C, int64_t ignore,
                                     const void *cw, int f64, ptrdiff_t *first_bad,
                                     double *weight_total)
{
    ptrdiff_t ignored = 0, bad = 0;
#pragma omp simd reduction(+ : ignored, bad)
    for (ptrdiff_t i = 0; i < n; i++) {
        const int is_ignored = y[i] == ignore;
        ignored += is_ignored;
        bad += !is_ignored & ((uint64_t)y[i] >= (uint64_t)C);
    }
    *first_bad = -1;
    for (ptrdiff_t i = 0; bad && i < n; i++)
        if (y[i] != ignore && (uint64_t)y[i] >= (uint64_t)C) {
            *first_bad = i;
            break;
        }
    *weight_total = cw && !bad ? NAME(weight_total)(y, n, C, ignore, cw, f64) : 0.0;
    return ignored;
}

/* One pass over y (its entries checked in range or `ignore`), writing each output that is
 * not NULL: y_out (ignored entries as 0), valid_out, and wy = cw[y] (0 where ignored; cw
 * and wy double when f64, else float). */
#define FILL_LOOP(W, CW)                                                                    \
    _Pragma("omp simd") for (ptrdiff_t i = 0; i < n; i++)                                   \
    {                                                                                       \
        const int keep = y[i] != ignore;                                                    \
        const int64_t v = keep ? y[i] : 0;                                                  \
        if (y_out)                                                                          \
            y_out[i] = v;                                                                   \
        if (valid_out)                                                                      \
            valid_out[i] = (unsigned char)keep;                                             \
        if (W)                                                                              \
            W[i] = keep ? CW[v] : 0;                                                        \
    }

static void NAME(fill_targets)(const int64_t *y, ptrdiff_t n, int64_t ignore, int64_t *y_out,
                               unsigned char *valid_out, const void *cw, void *wy, int f64)
{
    if (f64) {
        double *w = (double *)wy;
        const double *c = (const double *)cw;
        FILL_LOOP(w, c)
    } else {
        float *w = (float *)wy;
        const float *c = (const float *)cw;
        FILL_LOOP(w, c)
    }
}
#undef FILL_LOOP
