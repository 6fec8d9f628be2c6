/* Element functions that the compiler vectorizes: exp, log and float16 conversions; and,
 * in the AVX-512 build, the row kernels' exp loops in intrinsics (exp_row.h).
 *
 * Included once per instruction set by isa.h (NAME() appends that set's suffix), so the
 * same source compiles to AVX-512, AVX2 and baseline code. Every function is built from
 * +, -, *, / and bit operations only: a libm call per element would stop vectorization.
 * The build uses -ffp-contract=off, so a lane of a vector loop rounds exactly like the
 * scalar remainder loop: results never depend on where a row falls in a block.
 *
 * exp: x = k ln2 + r with |r| <= ln2/2 (ln2 split in two so k*ln2_hi is exact), then a
 * polynomial (float: Cephes expf) or the rational form of FreeBSD's e_exp.c (double),
 * then a multiplication by 2^k done as two exact powers of two, so overflow gives inf and
 * results below the normal range round once into subnormals, as libm's. k is read from
 * the bits of x/ln2 + 1.5*2^p (round to nearest, no float-to-int conversion).
 * log: x = 2^k f with f in [sqrt(2)/2, sqrt(2)), then FreeBSD's e_log.c / e_logf.c.
 * Special values: exp(-inf) = 0, exp(+inf) = inf, log(0) = -inf, log(inf) = inf,
 * log(x < 0) = NaN; NaN propagates (comparisons with NaN are false, so the clamps keep it).
 * Where the instruction set has fused multiply-adds (x86-64-v3 and up) the polynomials use
 * them explicitly: fewer operations, one rounding less, and the same in vector and scalar
 * code (only implicit contraction is off).
 */

#undef MADD_F32
#undef MADD_F64
#if defined(__FMA__) || defined(__aarch64__)
#define MADD_F32(a, b, c) __builtin_fmaf((a), (b), (c))
#define MADD_F64(a, b, c) __builtin_fma((a), (b), (c))
#else
#define MADD_F32(a, b, c) ((a) * (b) + (c))
#define MADD_F64(a, b, c) ((a) * (b) + (c))
#endif

/* e^r for x = k ln2 + r, |r| <= ln2/2, with k in *k (two's complement bits); x clamped. */
static ALWAYS_INLINE float NAME(exp_reduced_f32)(float x, uint32_t *k)
{
    const float shifter = 0x1.8p23f;
    float t = MADD_F32(x, 1.44269504088896341f, shifter);
    *k = f32_bits(t) - f32_bits(shifter); /* round(x / ln2) in two's complement */
    float kf = t - shifter;
    float r = MADD_F32(-kf, 0.693359375f, x); /* 0.693359375 has 9 bits: exact product */
    r = MADD_F32(-kf, -2.12194440e-4f, r);
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = MADD_F32(p, r, 1.3981999507e-3f);
    p = MADD_F32(p, r, 8.3334519073e-3f);
    p = MADD_F32(p, r, 4.1665795894e-2f);
    p = MADD_F32(p, r, 1.6666665459e-1f);
    p = MADD_F32(p, r, 5.0000001201e-1f);
    return MADD_F32(p, r2, r) + 1.0f;
}

static ALWAYS_INLINE float NAME(exp_f32)(float x)
{
    x = sel_f32(x < -104.0f, -104.0f, x); /* exp(-104) rounds to 0 in float */
    x = sel_f32(x > 90.0f, 90.0f, x);     /* exp(90) overflows to inf */
    uint32_t k;
    float y = NAME(exp_reduced_f32)(x, &k);
    int32_t ki = (int32_t)k;
    int32_t k1 = ki / 2, k2 = ki - k1; /* each in float's normal exponent range */
    float s1 = f32_from_bits((uint32_t)(k1 + 127) << 23);
    float s2 = f32_from_bits((uint32_t)(k2 + 127) << 23);
    return (y * s1) * s2;
}

/* e^r for x = kd ln2 + r (the rational form of FreeBSD's e_exp.c), kd in *kd_out; x clamped. */
static ALWAYS_INLINE double NAME(exp_reduced_f64)(double x, double *kd_out)
{
    const double shifter = 0x1.8p52;
    double t = MADD_F64(x, 1.44269504088896338700e+00, shifter);
    double kd = t - shifter; /* round(x / ln2) */
    double hi = MADD_F64(-kd, 6.93147180369123816490e-01, x); /* 32 trailing zero bits: exact */
    double lo = kd * 1.90821492927058770002e-10;
    double r = hi - lo;
    double r2 = r * r;
    double q = MADD_F64(r2, 4.13813679705723846039e-08, -1.65339022054652515390e-06);
    q = MADD_F64(r2, q, 6.61375632143793436117e-05);
    q = MADD_F64(r2, q, -2.77777777770155933842e-03);
    q = MADD_F64(r2, q, 1.66666666666666019037e-01);
    double c = MADD_F64(-r2, q, r);
    *kd_out = kd;
    return 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
}

static ALWAYS_INLINE double NAME(exp_f64)(double x)
{
    x = sel_f64(x < -746.0, -746.0, x); /* exp(-746) rounds to 0 */
    x = sel_f64(x > 710.0, 710.0, x);   /* exp(710) overflows to inf */
    double kd;
    double y = NAME(exp_reduced_f64)(x, &kd);
    /* 2^k as 2^k1 * 2^k2, k1 + k2 = k, each power built from the low bits of k + 1023 +
     * 1.5*2^52 (only 64-bit adds and left shifts: SSE2 and AVX2 have no int64 <-> double
     * conversions or arithmetic right shifts). */
    const double shifter = 0x1.8p52;
    double k1 = (kd * 0.5 + shifter) - shifter, k2 = kd - k1;
    double s1 = f64_from_bits(f64_bits(k1 + (shifter + 1023.0)) << 52);
    double s2 = f64_from_bits(f64_bits(k2 + (shifter + 1023.0)) << 52);
    return (y * s1) * s2;
}

/* exp(x) for x <= 0, -inf or NaN: what every exp(x - max) of a row computes. Bit for bit
 * exp_f32/exp_f64 there, in fewer vector operations (the f32 loop: 22 instead of 35): no
 * overflow clamp, and 2^k (k >= -150, or -1076 in double) is one power of two, 2^(k + 24)
 * (2^(k + 54)), still normal, times y exactly, then one multiplication by 2^-24 (2^-54)
 * that rounds once, as the two-power product of exp_f32 does. A positive x gives garbage. */
static ALWAYS_INLINE float NAME(exp_nonpos_f32)(float x)
{
    x = sel_f32(x < -104.0f, -104.0f, x);
    uint32_t k;
    float y = NAME(exp_reduced_f32)(x, &k);
    float s = f32_from_bits((k + (127u + 24u)) << 23);
    return (y * s) * 0x1p-24f;
}

static ALWAYS_INLINE double NAME(exp_nonpos_f64)(double x)
{
    x = sel_f64(x < -746.0, -746.0, x);
    double kd;
    double y = NAME(exp_reduced_f64)(x, &kd);
    double s = f64_from_bits(f64_bits(kd + (0x1.8p52 + (1023.0 + 54.0))) << 52);
    return (y * s) * 0x1p-54;
}

#if defined(__AVX512F__)
/* The row kernels' exps in the AVX-512 build, in intrinsics: the compiler cannot turn a
 * table lookup into a register permutation. x - m = (16k + j) ln2/16 + r, |r| <= ln2/32;
 * exp = 2^(j/16) (a 16-entry table held in registers, read with vpermps / vpermt2pd)
 * times e^r (Taylor to r^4 in float, r^7 in double: truncation below 4e-11 and 1e-18)
 * times 2^k, applied by vscalefps/pd, which rounds once into the subnormals and gives 0
 * below them. No division. Within 0.75 ulp (float: the table's rounding error is added
 * back) and 1.02 ulp (double) of exp.
 * -inf gives 0 (clamped like exp_nonpos_*), NaN stays NaN (vmaxps/pd returns its second
 * operand when either is NaN). Against exp_nonpos_* in the same loop (one thread, 32000
 * entries in cache, exps stored and summed): 0.81x the time in float (before the table's
 * error was added back: 0.94-1.0x the speed since), 0.69x in double. */
static const double NAME(exp2_sixteenths_f64)[16] = {
    0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
    0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
    0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0,
};

static ALWAYS_INLINE __m512d NAME(vexp_nonpos_f64)(__m512d x)
{
    /* loop-invariant: the compiler keeps the table in two registers across a row */
    const __m512d t_lo = _mm512_loadu_pd(NAME(exp2_sixteenths_f64));
    const __m512d t_hi = _mm512_loadu_pd(NAME(exp2_sixteenths_f64) + 8);
    const __m512d shifter = _mm512_set1_pd(0x1.8p52);
    x = _mm512_max_pd(_mm512_set1_pd(-746.0), x);
    /* n = round(16 x / ln2) in the low bits of t; its low 4 bits index the table */
    __m512d t = _mm512_fmadd_pd(x, _mm512_set1_pd(0x1.71547652b82fep+4), shifter);
    __m512d n = _mm512_sub_pd(t, shifter);
    /* ln2/16 split in two: n * hi is exact (hi ends in 20 zero bits, |n| < 2^15) */
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(0x1.62e42fef00000p-5), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(0x1.473de6af278edp-38), r);
    __m512d q = _mm512_set1_pd(1.0 / 5040);
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 720));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0));
    __m512d p = _mm512_mul_pd(q, r); /* e^r - 1 */
    __m512d tj = _mm512_permutex2var_pd(t_lo, _mm512_castpd_si512(t), t_hi);
    return _mm512_scalef_pd(_mm512_fmadd_pd(tj, p, tj), _mm512_mul_pd(n, _mm512_set1_pd(0.0625)));
}

static const float NAME(exp2_sixteenths_f32)[16] = {
    0x1.000000p+0f, 0x1.0b5586p+0f, 0x1.172b84p+0f, 0x1.2387a6p+0f, 0x1.306fe0p+0f, 0x1.3dea64p+0f,
    0x1.4bfdaep+0f, 0x1.5ab07ep+0f, 0x1.6a09e6p+0f, 0x1.7a1148p+0f, 0x1.8ace54p+0f, 0x1.9c4918p+0f,
    0x1.ae89fap+0f, 0x1.c199bep+0f, 0x1.d5818ep+0f, 0x1.ea4afap+0f,
};

/* 2^(j/16) - exp2_sixteenths_f32[j], rounded to float: the table's rounding error, added
 * back so that the result rounds about once (0.75 ulp at most instead of 0.98). */
static const float NAME(exp2_sixteenths_f32_lo)[16] = {
    0x0.0p+0f,         0x1.9f3122p-25f,  -0x1.c15742p-27f, 0x1.ceac48p-25f,
    0x1.4636e2p-25f,   0x1.824684p-25f,  -0x1.593abcp-25f, -0x1.5bd5ecp-27f,
    0x1.9fcef4p-26f,   -0x1.829fd0p-25f, 0x1.15506ep-27f,  0x1.51f848p-27f,
    -0x1.a94b14p-26f,  -0x1.3d56b2p-27f, -0x1.822dbcp-27f, 0x1.52486cp-27f,
};

static ALWAYS_INLINE __m512 NAME(vexp_nonpos_f32)(__m512 x)
{
    const __m512 table = _mm512_loadu_ps(NAME(exp2_sixteenths_f32));
    const __m512 table_lo = _mm512_loadu_ps(NAME(exp2_sixteenths_f32_lo));
    const __m512 shifter = _mm512_set1_ps(0x1.8p23f);
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+4f), shifter);
    __m512 n = _mm512_sub_ps(t, shifter);
    /* ln2/16 split in two: n * hi is exact (hi ends in 12 zero bits, |n| < 2^12) */
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62ep-5f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.0bfbe8p-19f), r);
    __m512 q = _mm512_set1_ps(1.0f / 24);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 6));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    __m512 p = _mm512_mul_ps(q, r);
    __m512 tj = _mm512_permutexvar_ps(_mm512_castps_si512(t), table);
    __m512 tj_lo = _mm512_permutexvar_ps(_mm512_castps_si512(t), table_lo);
    __m512 y = _mm512_add_ps(tj, _mm512_fmadd_ps(tj, p, tj_lo));
    return _mm512_scalef_ps(y, _mm512_mul_ps(n, _mm512_set1_ps(0.0625f)));
}

#define ER_T double
#define ER_V __m512d
#define ER_MASK __mmask8
#define ER_LANES 8
#define ER_OP(op) _mm512_##op##_pd
#define ER_EXP NAME(vexp_nonpos_f64)
#define ER_NAME NAME(exp_sum_row_f64)
#define ER_LANES_NAME NAME(exp_lanes_f64)
#define ER_NEG_ABS_NAME NAME(exp_neg_abs_f64)
#include "exp_row.h"

#define ER_T float
#define ER_V __m512
#define ER_MASK __mmask16
#define ER_LANES 16
#define ER_OP(op) _mm512_##op##_ps
#define ER_EXP NAME(vexp_nonpos_f32)
#define ER_NAME NAME(exp_sum_row_f32)
#define ER_LANES_NAME NAME(exp_lanes_f32)
#define ER_NEG_ABS_NAME NAME(exp_neg_abs_f32)
#include "exp_row.h"
#endif

/* log(2^k (1 + f)) for f in [sqrt(2)/2 - 1, sqrt(2) - 1) and dk = k (FreeBSD's e_logf.c),
 * with fused multiply-adds where the instruction set has them (dk * ln2_hi is exact, so
 * the last one rounds as the subtraction did). Measured over samples of 4M arguments,
 * with them or without: about 0.84 ulp at most in float and double alike. With them, the
 * binary cross-entropy with logits took 0.86-0.94x the time (one thread, AVX-512; AVX2
 * 0.84-0.99x), kl_div 0.86-0.93x (AVX2 0.87-0.94x). */
static ALWAYS_INLINE float NAME(log_reduced_f32)(float f, float dk)
{
    float s = f / (2.0f + f);
    float z = s * s;
    float w = z * z;
    float t1 = w * MADD_F32(w, 0.24279078841f, 0.40000972152f);
    float t2 = z * MADD_F32(w, 0.28498786688f, 0.66666662693f);
    float R = t2 + t1;
    float hfsq = 0.5f * f * f;
    return MADD_F32(dk, 6.9313812256e-01f,
                    -((hfsq - MADD_F32(s, hfsq + R, dk * 9.0580006145e-06f)) - f));
}

static ALWAYS_INLINE float NAME(log_f32)(float x)
{
    int tiny = x < 0x1p-126f; /* subnormals: scaled into the normal range */
    float xs = sel_f32(tiny, x * 0x1p25f, x);
    int32_t kbias = (int32_t)((uint32_t)0 - (uint32_t)tiny) & 25;
    /* Reduce to fm in [sqrt(2)/2, sqrt(2)) (musl's logf): x = 2^k fm. */
    uint32_t ix = f32_bits(xs) + (0x3f800000u - 0x3f3504f3u);
    int32_t k = (int32_t)(ix >> 23) - 0x7f - kbias;
    float fm = f32_from_bits((ix & 0x007fffffu) + 0x3f3504f3u);
    float y = NAME(log_reduced_f32)(fm - 1.0f, (float)k);
    y = sel_f32(x == 0.0f, -INFINITY, y);
    y = sel_f32(x == INFINITY, INFINITY, y);
    y = sel_f32(x < 0.0f, NAN, y);
    y = sel_f32(x != x, x, y);
    return y;
}

/* log(u) for u in [1, 2] or NaN: log_f32's bits in fewer operations (no exponent to
 * extract, no special value): k is 1 from log_f32's threshold on (0x3fb504f3, the float
 * nearest sqrt(2), just below it), where fm = u / 2 exactly. */
static ALWAYS_INLINE float NAME(log_1_2_f32)(float u)
{
    int big = u >= 0x1.6a09e6p+0f;
    return NAME(log_reduced_f32)(sel_f32(big, u * 0.5f, u) - 1.0f, sel_f32(big, 1.0f, 0.0f));
}

/* log(2^k (1 + f)) as log_reduced_f32, in double (FreeBSD's e_log.c). */
static ALWAYS_INLINE double NAME(log_reduced_f64)(double f, double dk)
{
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = MADD_F64(w, 1.531383769920937332e-01, 2.222219843214978396e-01);
    t1 = w * MADD_F64(w, t1, 3.999999999940941908e-01);
    double t2 = MADD_F64(w, 1.479819860511658591e-01, 1.818357216161805012e-01);
    t2 = MADD_F64(w, t2, 2.857142874366239149e-01);
    t2 = z * MADD_F64(w, t2, 6.666666666666735130e-01);
    double R = t2 + t1;
    double hfsq = 0.5 * f * f;
    return MADD_F64(dk, 6.93147180369123816490e-01,
                    -((hfsq - MADD_F64(s, hfsq + R, dk * 1.90821492927058770002e-10)) - f));
}

static ALWAYS_INLINE double NAME(log_f64)(double x)
{
    int tiny = x < 0x1p-1022;
    double xs = sel_f64(tiny, x * 0x1p54, x);
    int64_t kbias = (int64_t)((uint64_t)0 - (uint64_t)tiny) & 54;
    uint64_t ix = f64_bits(xs) + ((uint64_t)(0x3ff00000u - 0x3fe6a09eu) << 32);
    uint64_t k = (ix >> 52) - 0x3ff - (uint64_t)kbias;
    double fm = f64_from_bits((ix & 0x000fffffffffffffull) + ((uint64_t)0x3fe6a09eu << 32));
    /* (double)k without an int64 conversion: k in the low bits of 1.5*2^52 */
    double dk = f64_from_bits(f64_bits(0x1.8p52) + k) - 0x1.8p52;
    double y = NAME(log_reduced_f64)(fm - 1.0, dk);
    y = sel_f64(x == 0.0, -INFINITY, y);
    y = sel_f64(x == INFINITY, INFINITY, y);
    y = sel_f64(x < 0.0, NAN, y);
    y = sel_f64(x != x, x, y);
    return y;
}

/* log(u) for u in [1, 2] or NaN: log_f64's bits in fewer operations (as log_1_2_f32; the
 * threshold 0x3ff6a09e00000000 is the high word log_f64 compares). */
static ALWAYS_INLINE double NAME(log_1_2_f64)(double u)
{
    int big = u >= 0x1.6a09ep+0;
    return NAME(log_reduced_f64)(sel_f64(big, u * 0.5, u) - 1.0, sel_f64(big, 1.0, 0.0));
}

/* float16 bits -> float: exact. The 15 bits move to float's place and a multiplication by
 * 2^112 fixes the exponent bias (and normalizes float16 subnormals); inf and NaN keep
 * their payload. */
static ALWAYS_INLINE float NAME(half_to_f32)(uint16_t h)
{
    uint32_t em = (uint32_t)(h & 0x7fffu);
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    float f = f32_from_bits(em << 13) * 0x1p112f;
    uint32_t bits = sel_u32(em >= 0x7c00u, (em << 13) | 0x7f800000u, f32_bits(f));
    return f32_from_bits(bits | sign);
}

/* float -> float16 bits, rounded to nearest even like NumPy's astype(np.float16): overflow
 * to inf, NaN to a quiet NaN, subnormals through one float addition whose rounding is the
 * float16 one (F. Giesen's float_to_half_fast3_rtne). */
static ALWAYS_INLINE uint16_t NAME(f32_to_half)(float v)
{
    uint32_t u = f32_bits(v);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint32_t special = sel_u32(u > 0x7f800000u, 0x7e00u | ((u >> 13) & 0x3ffu), 0x7c00u);
    const float denorm_magic = 0x1p-1f; /* ((127 - 15) + (23 - 10) + 1) << 23 */
    uint32_t sub = f32_bits(f32_from_bits(u) + denorm_magic) - f32_bits(denorm_magic);
    uint32_t odd = (u >> 13) & 1u;
    uint32_t norm = (u + 0xc8000fffu + odd) >> 13; /* ((15 - 127) << 23) + 0xfff */
    uint32_t o = sel_u32(u >= 0x47800000u, special, sel_u32(u < 0x38800000u, sub, norm));
    return (uint16_t)(o | (sign >> 16));
}

/* Rows of float16 <-> float: the instruction set's conversions where it has them (F16C,
 * in x86-64-v3 and up: exact one way, rounded to nearest even the other, like NumPy's
 * astype), the element functions above for the rest. */
static inline void NAME(half_row_to_f32)(const uint16_t *h, float *f, ptrdiff_t n)
{
    ptrdiff_t done = 0;
#if defined(__AVX512F__)
    for (; done + 16 <= n; done += 16)
        _mm512_storeu_ps(f + done,
                         _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + done))));
#elif defined(__F16C__)
    for (; done + 8 <= n; done += 8)
        _mm256_storeu_ps(f + done, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + done))));
#endif
#pragma omp simd
    for (ptrdiff_t j = done; j < n; j++)
        f[j] = NAME(half_to_f32)(h[j]);
}

static inline void NAME(f32_row_to_half)(const float *f, uint16_t *h, ptrdiff_t n)
{
    ptrdiff_t done = 0;
#if defined(__AVX512F__)
    for (; done + 16 <= n; done += 16)
        _mm256_storeu_si256((__m256i *)(h + done),
                            _mm512_cvtps_ph(_mm512_loadu_ps(f + done), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
    for (; done + 8 <= n; done += 8)
        _mm_storeu_si128((__m128i *)(h + done),
                         _mm256_cvtps_ph(_mm256_loadu_ps(f + done), _MM_FROUND_TO_NEAREST_INT));
#endif
#pragma omp simd
    for (ptrdiff_t j = done; j < n; j++)
        h[j] = NAME(f32_to_half)(f[j]);
}
