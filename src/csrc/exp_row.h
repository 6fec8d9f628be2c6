/* The row kernels' exp loops in AVX-512 intrinsics for one dtype, included by mathfuncs.h
 * (float32, float64) with ER_T (the element), ER_V (its vector), ER_MASK (a lane mask),
 * ER_LANES, ER_OP(op) (the intrinsic _mm512_<op>_ps or _pd), ER_EXP (the vector exp of
 * arguments <= 0), ER_NAME, ER_LANES_NAME and ER_NEG_ABS_NAME (the three functions' names)
 * defined; it undefines them.
 *
 * ER_NAME(x, n, m, e, w, dot, sum_w, shifted) = sum_j exp(x_j - m) over the n entries of
 * contiguous row x, each exp (or, when shifted, each x_j - m) stored in e[j] unless e is
 * NULL (e may be x: every entry is read before it is overwritten). When dot is not NULL,
 * also *dot = sum_j w_j (x_j - m) (w NULL: all ones) and, when sum_w is not NULL,
 * *sum_w = sum_j w_j: the sums the label smoothing and the probability targets need, in
 * the same pass. Each sum runs in ER_LANES lanes, added up at the end, in the same order
 * whatever else is computed. The last n % ER_LANES entries take one masked vector: lanes
 * past the row are neither read, added nor stored.
 */

/* One vector of ER_NAME's loop: lanes k of entries x[0..] (and w[0..]) added into the sums,
 * the exps (or x - m) stored in those lanes of e[0..]; load(p) reads the vector at p. */
#define ER_STEP(load, k, x, w, e)                                                             \
    do {                                                                                   \
        ER_V d = ER_OP(sub)(load(x), vm);                                                  \
        if (dot) {                                                                         \
            ER_V wj = w ? load(w) : one;                                                   \
            sd = ER_OP(mask3_fmadd)(wj, d, sd, k);                                         \
            if (sum_w)                                                                     \
                sw = ER_OP(mask_add)(sw, k, sw, wj);                                       \
        }                                                                                  \
        ER_V v = ER_EXP(d);                                                                \
        if (e)                                                                             \
            ER_OP(mask_storeu)(e, k, shifted ? d : v);                                     \
        s = ER_OP(mask_add)(s, k, s, v);                                                   \
    } while (0)

static ALWAYS_INLINE ER_T ER_NAME(const ER_T *x, ptrdiff_t n, ER_T m, ER_T *e, const ER_T *w,
                                  ER_T *dot, ER_T *sum_w, int shifted)
{
    const ER_V vm = ER_OP(set1)(m), one = ER_OP(set1)((ER_T)1);
    ER_V s = ER_OP(setzero)(), sd = s, sw = s;
    /* Whole vectors are read with plain loads: the hardware prefetchers do not follow
     * masked ones. With masked loads throughout, a row streamed from memory (the
     * probability targets') took 1.8-2.2x as long, and rows read back from the
     * second-level cache 1.1-1.6x (one thread, Zen 4). Plain stores and adds instead of
     * their all-lanes masked forms measured the same and would not change a bit. */
    const ptrdiff_t whole = n - n % ER_LANES;
    ptrdiff_t j = 0;
#define ER_PLAIN(p) ER_OP(loadu)(p)
    for (; j < whole; j += ER_LANES)
        ER_STEP(ER_PLAIN, (ER_MASK)-1, x + j, (w ? w + j : NULL), (e ? e + j : NULL));
#undef ER_PLAIN
    if (j < n) { /* the last n % ER_LANES entries: lanes past the row are not touched */
        const ER_MASK k = (ER_MASK)((1u << (n - j)) - 1u);
#define ER_MASKED(p) ER_OP(maskz_loadu)(k, p)
        ER_STEP(ER_MASKED, k, x + j, (w ? w + j : NULL), (e ? e + j : NULL));
#undef ER_MASKED
    }
    if (dot)
        *dot = ER_OP(reduce_add)(sd);
    if (sum_w)
        *sum_w = ER_OP(reduce_add)(sw);
    return ER_OP(reduce_add)(s);
}

/* v[r] = exp(x[r] - m[r]) for r < n, n a multiple of ER_LANES: the exps of a narrow
 * tile's class, one per row. */
static ALWAYS_INLINE void ER_LANES_NAME(const ER_T *x, const ER_T *m, ER_T *v, int n)
{
    for (int r = 0; r < n; r += ER_LANES)
        ER_OP(storeu)(v + r, ER_EXP(ER_OP(sub)(ER_OP(loadu)(x + r), ER_OP(loadu)(m + r))));
}

/* e[j] = exp(-|x[j]|) for j < n (NaN stays NaN): the exps of the binary cross-entropy with
 * logits. Whole vectors with plain loads, the last n % ER_LANES entries masked. */
static ALWAYS_INLINE void ER_NEG_ABS_NAME(const ER_T *x, ER_T *e, ptrdiff_t n)
{
    const ER_V zero = ER_OP(setzero)();
    ptrdiff_t j = 0;
    for (; j + ER_LANES <= n; j += ER_LANES)
        ER_OP(storeu)(e + j, ER_EXP(ER_OP(sub)(zero, ER_OP(abs)(ER_OP(loadu)(x + j)))));
    if (j < n) {
        const ER_MASK k = (ER_MASK)((1u << (n - j)) - 1u);
        ER_V v = ER_OP(sub)(zero, ER_OP(abs)(ER_OP(maskz_loadu)(k, x + j)));
        ER_OP(mask_storeu)(e + j, k, ER_EXP(v));
    }
}

#undef ER_T
#undef ER_V
#undef ER_MASK
#undef ER_LANES
#undef ER_OP
#undef ER_EXP
#undef ER_NAME
#undef ER_LANES_NAME
#undef ER_NEG_ABS_NAME
#undef ER_STEP
