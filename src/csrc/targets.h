/* A cross-entropy's class-index targets, checked and prepared (core.c's class_targets),
 * included by isa.h once per instruction set: the vector loops compare int64 values and
 * gather class weights, which the baseline instruction set does several times slower. */

/* How many of y[0:n] equal `ignore`; *first_bad: the first entry neither in [0, C) nor
 * `ignore` (-1: none). One vectorized pass (a loop that stops at the first bad entry does
 * not vectorize; the entry is looked for only when there is one). */
static ptrdiff_t NAME(count_targets)(const int64_t *y, ptrdiff_t n, int64_t C, int64_t ignore,
                                     ptrdiff_t *first_bad)
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
