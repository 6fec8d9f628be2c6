/* The block kernels of the elementwise losses for one dtype T, included by isa.h for float
 * and double (float16 blocks reach them converted to float by softxent/_elementwise.py).
 *
 * Expects: T, SFX (name suffix), EXPT, EXPN (exp of x <= 0 or NaN), LOGT, LOG12 (log of
 * [1, 2] or NaN), SEL (c ? a : b for T), and rows.h's CAT2; optionally EXP_NEG_ABS
 * (exp(-|x|) over an array, the AVX-512 build's).
 *
 * Each element is computed alone, from the formulas and in the operation order of the
 * NumPy kernels in softxent/_elementwise_kernels.py (the reference they are tested
 * against), loss and gradient in one pass. The row loops are specialized for each
 * combination of present operands (weight, pos_weight, an upstream-gradient array, a
 * gradient to write) so that no test is left in the vector loop. Blocks whose rows are
 * contiguous one after another run as one long row (narrow rows vectorize too).
 */

#define EW(f) NAME(CAT2(f, SFX))

/* log1p(y) for y > -1 as the NumPy kernels' log1p_into: Kahan's
 * log(1 + y) * y / ((1 + y) - 1), then min(., y), which also replaces the NaN where
 * 1 + y rounds to 1 by y. */
static ALWAYS_INLINE T EW(log1p)(T y)
{
    T u = y + (T)1;
    T o = y / (u - (T)1);
    o = LOGT(u) * o;
    return SEL(o < y, o, y);
}

/* Row arguments: n entries; x, t, w, p, g (g only when hg, else gs), loss, grad. */
#define EW_ROW_ARGS                                                                          \
    ptrdiff_t n, const T *restrict x, const T *restrict t, const T *restrict w,            \
        const T *restrict p, const T *restrict g, T gs, T *restrict loss,                   \
        T *restrict grad, const int hw, const int hp, const int hg, const int dg

static ALWAYS_INLINE void EW(mse_row)(EW_ROW_ARGS)
{
    (void)p;
    (void)hp;
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++) {
        T d = x[j] - t[j];
        if (dg) {
            T r = d * (T)2;
            if (hw)
                r = r * w[j];
            grad[j] = r * (hg ? g[j] : gs);
        }
        T l = d * d;
        loss[j] = hw ? l * w[j] : l;
    }
}

/* The binary cross-entropy with logits over n entries; with pre, exp(-|x_j|) is read from
 * ex[j] instead of computed. */
static ALWAYS_INLINE void EW(bce_logits_span)(EW_ROW_ARGS, const T *restrict ex, const int pre)
{
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++) {
        T xv = x[j], tv = t[j];
        T pt = hp ? (p[j] - (T)1) * tv + (T)1 : (T)1; /* 1 + (p - 1) t */
        T c = SEL(xv < (T)0, -xv, xv);                  /* |x|, NaN kept */
        T e = pre ? ex[j] : EXPN(-c), u = e + (T)1, r = (T)1 / u; /* one division */
        if (dg) {
            /* sigmoid(x) = 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) below:
             * the NumPy kernel's value within rounding, without a second exp (below
             * x = -87 in float32 it keeps a subnormal where 1 / (1 + inf) gives 0). */
            T s = SEL(xv < (T)0, e, (T)1) * r;
            T r = hp ? pt * s - p[j] * tv : s - tv;
            if (hw)
                r = r * w[j];
            grad[j] = r * (hg ? g[j] : gs);
        }
        /* log1p(e) = log(u) + log(1 + (e - (u - 1)) / u): u - 1 is exact (u in [1, 2]),
         * so the second term is the rounding of u, taken to first order (exact to below
         * half an ulp of the result; where u rounds to 1 it gives e itself). The NumPy
         * kernel's Kahan form needs a second division. */
        T l1p = LOG12(u) + (e - (u - (T)1)) * r;
        T sp = l1p + (c - xv) * (T)0.5; /* softplus(-x) */
        if (hp)
            sp = sp * pt;
        T l = ((T)1 - tv) * xv + sp;
        loss[j] = hw ? l * w[j] : l;
    }
}

/* The AVX-512 build takes the exps from its table exp (exp_row.h: no division, fewer
 * operations than EXPN, which GCC vectorizes from scalar code), a chunk at a time into a
 * buffer in the first-level cache. One thread, 1M entries with gradient: 0.57x the time
 * of EXPN in float32, 0.49x in float64; chunks of 64-512 entries measured alike, 2048
 * slower. */
#if defined(EXP_NEG_ABS)
#define EW_EXP_CHUNK 256
#endif

static ALWAYS_INLINE void EW(bce_logits_row)(EW_ROW_ARGS)
{
#if defined(EXP_NEG_ABS)
    T ex[EW_EXP_CHUNK];
    for (ptrdiff_t j = 0; j < n; j += EW_EXP_CHUNK) {
        ptrdiff_t m = n - j < EW_EXP_CHUNK ? n - j : EW_EXP_CHUNK;
        EXP_NEG_ABS(x + j, ex, m);
        EW(bce_logits_span)(m, x + j, t + j, hw ? w + j : w, hp ? p + j : p, hg ? g + j : g, gs,
                            loss + j, dg ? grad + j : grad, hw, hp, hg, dg, ex, 1);
    }
#else
    EW(bce_logits_span)(n, x, t, w, p, g, gs, loss, grad, hw, hp, hg, dg, NULL, 0);
#endif
}

static ALWAYS_INLINE void EW(bce_row)(EW_ROW_ARGS)
{
    (void)p;
    (void)hp;
    const T eps = (T)1e-12f; /* torch's float32 floor of q (1 - q) */
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++) {
        T q = x[j], tv = t[j];
        if (dg) {
            T a = ((T)1 - q) * q;
            a = SEL(a < eps, eps, a);
            T r = (q - tv) / a;
            if (hw)
                r = r * w[j];
            grad[j] = r * (hg ? g[j] : gs);
        }
        T a = EW(log1p)(-q);
        a = SEL(a < (T)-100, (T)-100, a); /* torch's log clamp, NaN kept */
        T b = LOGT(q);
        b = SEL(b < (T)-100, (T)-100, b);
        T l = (tv - (T)1) * a - b * tv;
        loss[j] = hw ? l * w[j] : l;
    }
}

static ALWAYS_INLINE void EW(kl_row)(EW_ROW_ARGS)
{
    (void)w;
    (void)hw;
    (void)p;
    (void)hp;
    const T lowest = sizeof(T) == 4 ? (T)-FLT_MAX : (T)-DBL_MAX;
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++) {
        T tv = t[j];
        if (dg)
            grad[j] = -(tv * (hg ? g[j] : gs));
        T a = LOGT(tv);
        a = SEL(a < lowest, lowest, a); /* xlogy(0, 0) = 0; NaN kept */
        loss[j] = a * tv - tv * x[j];
    }
}

static ALWAYS_INLINE void EW(kl_log_row)(EW_ROW_ARGS)
{
    (void)w;
    (void)hw;
    (void)p;
    (void)hp;
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++) {
        T tv = t[j];
        T a = EXPT(tv);
        if (dg)
            grad[j] = -(a * (hg ? g[j] : gs));
        loss[j] = (tv - x[j]) * a;
    }
}

/* Every row of the block through ROW, specialized on the flags (see the top). */
#define EW_SPLIT(flag, ...)                                                                  \
    if (J->flag) {                                                                           \
        const int flag = 1;                                                                  \
        __VA_ARGS__;                                                                         \
    } else {                                                                                 \
        const int flag = 0;                                                                  \
        __VA_ARGS__;                                                                         \
    }

#define EW_BLOCK(ROW)                                                                        \
    static void EW(ROW##_block)(const ew_job_t *J)                                           \
    {                                                                                        \
        const T gs = (T)J->g_scalar;                                                         \
        ptrdiff_t rows = J->rows, n = J->cols;                                               \
        if (J->flat) {                                                                       \
            n *= rows;                                                                       \
            rows = 1;                                                                        \
        }                                                                                    \
        for (ptrdiff_t r = 0; r < rows; r++) {                                               \
            const T *x = (const T *)J->x + r * J->x_rs, *t = (const T *)J->t + r * J->t_rs; \
            const T *w = J->hw ? (const T *)J->w + r * J->w_rs : NULL;                       \
            const T *p = J->hp ? (const T *)J->p + r * J->p_rs : NULL;                       \
            const T *g = J->hg ? (const T *)J->g + r * J->g_rs : NULL;                       \
            T *loss = (T *)J->loss_out + r * J->loss_rs;                                                 \
            T *grad = J->dg ? (T *)J->grad + r * J->grad_rs : NULL;                          \
            EW_SPLIT(hw, EW_SPLIT(hp, EW_SPLIT(hg, EW_SPLIT(dg, EW(ROW)(n, x, t, w, p, g, gs, \
                                                                     loss, grad, hw, hp, hg, \
                                                                     dg)))))                 \
        }                                                                                    \
    }

EW_BLOCK(mse_row)
EW_BLOCK(bce_logits_row)
EW_BLOCK(bce_row)
EW_BLOCK(kl_row)
EW_BLOCK(kl_log_row)

static void EW(loss_block)(const ew_job_t *J)
{
    switch (J->loss) {
    case EW_MSE: EW(mse_row_block)(J); break;
    case EW_BCE_LOGITS: EW(bce_logits_row_block)(J); break;
    case EW_BCE: EW(bce_row_block)(J); break;
    case EW_KL: EW(kl_row_block)(J); break;
    case EW_KL_LOG: EW(kl_log_row_block)(J); break;
    }
}

#undef EW_BLOCK
#undef EW_SPLIT
#undef EW_ROW_ARGS
#undef EW_EXP_CHUNK
#undef EW
