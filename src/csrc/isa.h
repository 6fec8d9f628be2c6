/* One instruction set's kernels: the element functions, then the row kernels for each
 * storage dtype (float16 and float32 computed in float, float64 in double). The includer
 * defines NAME(f), which appends the instruction set's suffix. */

#include "mathfuncs.h"
#include "targets.h"

#define SAME 1
#define S float
#define T float
#define SFX f32
#define LD(v) (v)
#define ST(v) (v)
#define EXPT NAME(exp_f32)
#define EXPN NAME(exp_nonpos_f32)
#define LOGT NAME(log_f32)
#define SEL sel_f32
#include "rows.h"
#include "elementwise.h"
#undef S
#undef T
#undef SFX
#undef EXPT
#undef EXPN
#undef LOGT
#undef SEL

#define S double
#define T double
#define SFX f64
#define EXPT NAME(exp_f64)
#define EXPN NAME(exp_nonpos_f64)
#define LOGT NAME(log_f64)
#define SEL sel_f64
#if defined(__AVX512F__)
#define EXP_SUM_ROW NAME(exp_sum_row_f64)
#endif
#include "rows.h"
#include "elementwise.h"
#undef EXP_SUM_ROW
#undef S
#undef T
#undef SFX
#undef LD
#undef ST
#undef SAME
#undef EXPT
#undef EXPN
#undef LOGT
#undef SEL

#define SAME 0
#define S uint16_t
#define T float
#define SFX f16
#define LD(v) NAME(half_to_f32)(v)
#define ST(v) NAME(f32_to_half)(v)
#define LD_ROW(s, t, n) NAME(half_row_to_f32)((s), (t), (n))
#define ST_ROW(t, s, n) NAME(f32_row_to_half)((t), (s), (n))
#define EXPT NAME(exp_f32)
#define EXPN NAME(exp_nonpos_f32)
#define LOGT NAME(log_f32)
#define SEL sel_f32
#include "rows.h"
#undef S
#undef T
#undef SFX
#undef SEL
#undef LD
#undef ST
#undef LD_ROW
#undef ST_ROW
#undef SAME
#undef EXPT
#undef EXPN
#undef LOGT

/* float16 <-> float32 over contiguous arrays: the elementwise losses' float16 blocks
 * (softxent._native.convert_block) and the tests of the conversions. */
static void NAME(half_array)(const void *x, void *y, ptrdiff_t n, int to_half)
{
    if (to_half)
        NAME(f32_row_to_half)((const float *)x, (uint16_t *)y, n);
    else
        NAME(half_row_to_f32)((const uint16_t *)x, (float *)y, n);
}
