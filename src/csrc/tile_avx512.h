/* The narrow kernels' transposes in AVX-512 intrinsics, included by isa.h in the AVX-512
 * build: a group of rows whose classes are contiguous, moved between memory (row r of the
 * group at x + r rs, classes 0..C-1 next to each other) and a tile (class c's entries at
 * t + c ts, one per row). Any C; a class's entries of one group fill one vector.
 *
 * Why: the vector loop of the portable transpose (one class at a time, rows rs apart) is
 * compiled into an element load and an insert per entry (the generic tuning emulates
 * vector gathers; the gather instructions took 1.1-1.45x its time on Zen 4). Here
 * each row of a group is one masked vector load per 16 classes (8 for float64), and the
 * group is transposed in registers: 4 shuffles per vector (3 for float64). Values move
 * unchanged (float16 widens exactly, and rounds to nearest even on the way out, as
 * f32_to_half does), so the kernels' results keep their bits.
 *
 * Lanes past the row are neither read nor written (masked loads and stores); tile entries
 * of classes >= C are not written. The loads and stores are one template, tile_io.h. */

/* r[c] = column c of the 16 x 16 matrix whose row i is r[i]: pairs of rows interleaved,
 * then pairs of pairs, then 128-bit quarters exchanged twice. */
static ALWAYS_INLINE void NAME(transpose_16x16)(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++) {
            t[8 * h + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + 4 + j], 0x88);
            t[8 * h + 4 + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

/* The same for 8 x 8 doubles. */
static ALWAYS_INLINE void NAME(transpose_8x8)(__m512d r[8])
{
    __m512d t[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) {
        r[4 * h] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0x88);
        r[4 * h + 1] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0x88);
        r[4 * h + 2] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0xdd);
        r[4 * h + 3] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f64x2(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f64x2(r[j], r[4 + j], 0xdd);
    }
    for (int j = 0; j < 8; j++)
        r[j] = t[j];
}

/* The loads and stores of each storage dtype (tile_io.h): float32, float16 (widened to
 * float on the way in, rounded to nearest even on the way out), float64. */
#define TT_S float
#define TT_T float
#define TT_V __m512
#define TT_MASK __mmask16
#define TT_LANES 16
#define TT_OP(op) _mm512_##op##_ps
#define TT_LOAD(k, p) _mm512_maskz_loadu_ps((k), (p))
#define TT_STORE(p, k, v) _mm512_mask_storeu_ps((p), (k), (v))
#define TT_TRANSPOSE NAME(transpose_16x16)
#define TT_LOAD_NAME NAME(tile_load_f32)
#define TT_STORE_NAME NAME(tile_store_f32)
#include "tile_io.h"

#define TT_S uint16_t
#define TT_T float
#define TT_V __m512
#define TT_MASK __mmask16
#define TT_LANES 16
#define TT_OP(op) _mm512_##op##_ps
#define TT_LOAD(k, p) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((k), (p)))
#define TT_STORE(p, k, v)                                                                   \
    _mm256_mask_storeu_epi16((p), (k), _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))
#define TT_TRANSPOSE NAME(transpose_16x16)
#define TT_LOAD_NAME NAME(tile_load_f16)
#define TT_STORE_NAME NAME(tile_store_f16)
#include "tile_io.h"

#define TT_S double
#define TT_T double
#define TT_V __m512d
#define TT_MASK __mmask8
#define TT_LANES 8
#define TT_OP(op) _mm512_##op##_pd
#define TT_LOAD(k, p) _mm512_maskz_loadu_pd((k), (p))
#define TT_STORE(p, k, v) _mm512_mask_storeu_pd((p), (k), (v))
#define TT_TRANSPOSE NAME(transpose_8x8)
#define TT_LOAD_NAME NAME(tile_load_f64)
#define TT_STORE_NAME NAME(tile_store_f64)
#include "tile_io.h"

/* The narrow cross-entropy's target weights (rows.h class_weights): wt[r] = cw[y[r]] ok[r]
 * for the tile's rows r < n and 1 for the lanes from n on (y: NARROW_TILE classes in
 * [0, C), C <= 32). The C weights are held in registers and each vector of rows looks its
 * weights up with two-register permutes, where a vector gather took 2.5x a scalar loop on
 * Zen 4 and the scalar loop cost a weighted forward 10% at 10 classes. Values move
 * unchanged (ok is 0 or 1), so the results are the scalar loop's. */
static ALWAYS_INLINE __mmask16 NAME(live_lanes16)(ptrdiff_t k)
{
    return k <= 0 ? (__mmask16)0 : k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1);
}

static void NAME(tile_weights_f32)(const float *cw, ptrdiff_t C, const int32_t *y,
                                   const float *ok, ptrdiff_t n, float *wt)
{
    const __m512 lo = _mm512_maskz_loadu_ps(NAME(live_lanes16)(C), cw);
    const __m512 hi = _mm512_maskz_loadu_ps(NAME(live_lanes16)(C - 16), cw + 16);
    for (ptrdiff_t r = 0; r < NARROW_TILE; r += 16) {
        const __m512 w = _mm512_permutex2var_ps(lo, _mm512_loadu_si512(y + r), hi);
        const __m512 v = _mm512_mul_ps(w, _mm512_loadu_ps(ok + r));
        _mm512_storeu_ps(wt + r,
                         _mm512_mask_blend_ps(NAME(live_lanes16)(n - r), _mm512_set1_ps(1), v));
    }
}

static void NAME(tile_weights_f64)(const double *cw, ptrdiff_t C, const int32_t *y,
                                   const double *ok, ptrdiff_t n, double *wt)
{
    __m512d t[4]; /* classes 8k..8k+7 */
    for (int k = 0; k < 4; k++)
        t[k] = _mm512_maskz_loadu_pd((__mmask8)NAME(live_lanes16)(C - 8 * k), cw + 8 * k);
    for (ptrdiff_t r = 0; r < NARROW_TILE; r += 8) {
        const __m512i idx = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(y + r)));
        const __m512d low = _mm512_permutex2var_pd(t[0], idx, t[1]); /* classes 0..15 */
        const __m512d high = _mm512_permutex2var_pd(t[2], idx, t[3]); /* 16..31 */
        const __mmask8 upper = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(16));
        const __m512d w = _mm512_mask_blend_pd(upper, low, high);
        const __m512d v = _mm512_mul_pd(w, _mm512_loadu_pd(ok + r));
        _mm512_storeu_pd(wt + r, _mm512_mask_blend_pd((__mmask8)NAME(live_lanes16)(n - r),
                                                      _mm512_set1_pd(1), v));
    }
}
