/* One instruction set's kernels: the element functions, then the row kernels for each
 * storage dtype (float64 computed in double, float32 and float16 in float). The includer
 * defines NAME(f), which appends the instruction set's suffix. */

#include "mathfuncs.h"
#include "targets.h"
#if defined(__AVX512F__)
#include "tile_avx512.h"
#endif

/* ---- computed in double: float64 ---- */
#define T double
#define EXPT NAME(exp_f64)
#define EXPN NAME(exp_nonpos_f64)
#define LOGT NAME(log_f64)
#define LOG12 NAME(log_1_2_f64)
#define SEL sel_f64
#if defined(__AVX512F__)
#define EXP_SUM_ROW(x, n, m, e, w, dot, sum_w) \
    NAME(exp_sum_row_f64)(x, n, m, e, w, dot, sum_w, 0)
#define SHIFTED_SUM_ROW(x, n, m, d) NAME(exp_sum_row_f64)(x, n, m, d, NULL, NULL, NULL, 1)
#define EXP_LANES NAME(exp_lanes_f64)
#define EXP_NEG_ABS NAME(exp_neg_abs_f64)
#define TILE_WEIGHTS NAME(tile_weights_f64)
#endif

#define SAME 1
#define S double
#define SFX f64
#define LD(v) (v)
#define ST(v) (v)
#if defined(__AVX512F__)
#define TILE_GROUP 8
#define TILE_LOAD(x, rs, C, t) NAME(tile_load_f64)((x), (rs), (C), (t), NARROW_STRIDE)
#define TILE_STORE(o, rs, C, t) NAME(tile_store_f64)((o), (rs), (C), (t), NARROW_STRIDE)
#endif
#include "rows.h"
#include "elementwise.h"
#undef S
#undef SFX
#undef TILE_GROUP
#undef TILE_LOAD
#undef TILE_STORE

#undef T
#undef EXPT
#undef EXPN
#undef LOGT
#undef LOG12
#undef SEL
#undef EXP_SUM_ROW
#undef SHIFTED_SUM_ROW
#undef EXP_LANES
#undef EXP_NEG_ABS
#undef TILE_WEIGHTS

/* ---- computed in float: float32, then float16 ---- */
#define T float
#define EXPT NAME(exp_f32)
#define EXPN NAME(exp_nonpos_f32)
#define LOGT NAME(log_f32)
#define LOG12 NAME(log_1_2_f32)
#define SEL sel_f32
#if defined(__AVX512F__)
#define EXP_SUM_ROW(x, n, m, e, w, dot, sum_w) \
    NAME(exp_sum_row_f32)(x, n, m, e, w, dot, sum_w, 0)
#define SHIFTED_SUM_ROW(x, n, m, d) NAME(exp_sum_row_f32)(x, n, m, d, NULL, NULL, NULL, 1)
#define EXP_LANES NAME(exp_lanes_f32)
#define EXP_NEG_ABS NAME(exp_neg_abs_f32)
#define TILE_WEIGHTS NAME(tile_weights_f32)
#endif

#define S float
#define SFX f32
#if defined(__AVX512F__)
#define TILE_GROUP 16
#define TILE_LOAD(x, rs, C, t) NAME(tile_load_f32)((x), (rs), (C), (t), NARROW_STRIDE)
#define TILE_STORE(o, rs, C, t) NAME(tile_store_f32)((o), (rs), (C), (t), NARROW_STRIDE)
#endif
#include "rows.h"
#include "elementwise.h"
#undef S
#undef SFX
#undef TILE_LOAD
#undef TILE_STORE
#undef LD
#undef ST
#undef SAME

#define SAME 0
#define S uint16_t
#define SFX f16
#define LD(v) NAME(half_to_f32)(v)
#define ST(v) NAME(f32_to_half)(v)
#define LD_ROW(s, t, n) NAME(half_row_to_f32)((s), (t), (n))
#define ST_ROW(t, s, n) NAME(f32_row_to_half)((t), (s), (n))
#if defined(__AVX512F__)
#define TILE_LOAD(x, rs, C, t) NAME(tile_load_f16)((x), (rs), (C), (t), NARROW_STRIDE)
#define TILE_STORE(o, rs, C, t) NAME(tile_store_f16)((o), (rs), (C), (t), NARROW_STRIDE)
#endif
#include "rows.h"
#undef S
#undef SFX
#undef LD
#undef ST
#undef LD_ROW
#undef ST_ROW
#undef TILE_GROUP
#undef TILE_LOAD
#undef TILE_STORE
#undef SAME

#undef T
#undef EXPT
#undef EXPN
#undef LOGT
#undef LOG12
#undef SEL
#undef EXP_SUM_ROW
#undef SHIFTED_SUM_ROW
#undef EXP_LANES
#undef EXP_NEG_ABS
#undef TILE_WEIGHTS

/* float16 <-> float32 over contiguous arrays: the elementwise losses' float16 blocks
 * (softxent._native.convert_block) and the tests of the conversions. */
static void NAME(half_array)(const void *x, void *y, ptrdiff_t n, int to_half)
{
    if (to_half)
        NAME(f32_row_to_half)((const float *)x, (uint16_t *)y, n);
    else
        NAME(half_row_to_f32)((const uint16_t *)x, (float *)y, n);
}
