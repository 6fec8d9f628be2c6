/* A group of TT_LANES rows between memory and a narrow tile, for one storage dtype,
 * included by tile_avx512.h with TT_S (the stored element), TT_T (as computed), TT_V (its
 * vector), TT_MASK (a lane mask), TT_LANES, TT_OP(op) (the intrinsic _mm512_<op>_ps or
 * _pd), TT_LOAD(k, p) and TT_STORE(p, k, v) (masked, converting between TT_S and TT_V),
 * TT_TRANSPOSE, TT_LOAD_NAME and TT_STORE_NAME defined; it undefines them.
 *
 * Classes are taken TT_LANES at a time: one masked load per row, the transpose, one store
 * per class (and back the other way), so the last, partial vector of a row neither reads
 * nor writes past the row. */

/* t[c ts + r] = x[r rs + c] for the TT_LANES rows r and the C classes c. */
static inline void TT_LOAD_NAME(const TT_S *x, ptrdiff_t rs, ptrdiff_t C, TT_T *t, ptrdiff_t ts)
{
    for (ptrdiff_t c0 = 0; c0 < C; c0 += TT_LANES) {
        const ptrdiff_t nc = C - c0 < TT_LANES ? C - c0 : TT_LANES;
        const TT_MASK k = (TT_MASK)(nc == TT_LANES ? ~0u : (1u << nc) - 1u);
        TT_V r[TT_LANES];
        for (int i = 0; i < TT_LANES; i++)
            r[i] = TT_LOAD(k, x + i * rs + c0);
        TT_TRANSPOSE(r);
        for (ptrdiff_t c = 0; c < nc; c++)
            TT_OP(storeu)(t + (c0 + c) * ts, r[c]);
    }
}

/* o[r rs + c] = t[c ts + r]: the inverse. */
static inline void TT_STORE_NAME(TT_S *o, ptrdiff_t rs, ptrdiff_t C, const TT_T *t, ptrdiff_t ts)
{
    for (ptrdiff_t c0 = 0; c0 < C; c0 += TT_LANES) {
        const ptrdiff_t nc = C - c0 < TT_LANES ? C - c0 : TT_LANES;
        const TT_MASK k = (TT_MASK)(nc == TT_LANES ? ~0u : (1u << nc) - 1u);
        TT_V r[TT_LANES];
        for (int c = 0; c < TT_LANES; c++)
            r[c] = c < nc ? TT_OP(loadu)(t + (c0 + c) * ts) : TT_OP(setzero)();
        TT_TRANSPOSE(r);
        for (int i = 0; i < TT_LANES; i++)
            TT_STORE(o + i * rs + c0, k, r[i]);
    }
}

#undef TT_S
#undef TT_T
#undef TT_V
#undef TT_MASK
#undef TT_LANES
#undef TT_OP
#undef TT_LOAD
#undef TT_STORE
#undef TT_TRANSPOSE
#undef TT_LOAD_NAME
#undef TT_STORE_NAME
