/* The row kernels for one storage dtype S computed in T, included by isa.h per dtype.
 *
 * Expects: S, T, SFX (name suffix), LD(s) -> T, ST(t) -> S, EXPT, EXPN (exp of x <= 0 or
 * NaN: every exp(x - max) below), LOGT, SEL (c ? a : b for T), SAME (S is T). Optional:
 * EXP_SUM_ROW(x, n, m, e, w, dot, sum_w), an instruction set's own loop along a contiguous
 * row for the sum of exp(x_j - m) (each exp stored in e unless it is NULL) and, unless dot
 * is NULL, sum_j w_j (x_j - m) and sum_j w_j (see exp_row.h), with SHIFTED_SUM_ROW(x, n,
 * m, d) its form that stores x_j - m in d instead of the exps; where they are defined, they
 * replace the compiler-vectorized exp loops of the wide rows, as EXP_LANES(x, m, v, n)
 * (v_r = exp(x_r - m_r)) replaces those of the narrow tiles (see TILE_EXPS);
 * TILE_LOAD(x, rs, C, t) and TILE_STORE(o, rs, C, t), an instruction set's moves of
 * TILE_GROUP rows with contiguous classes into and out of a narrow tile (see gather).
 *
 * Shapes: a block is (R, C) with element strides (rs, cs); per-row arrays are (R,).
 * Each row is computed from that row alone, in a fixed order, so a row's result never
 * depends on the block, the thread or the other rows.
 *
 * Wide rows (see NARROW_MAX_CLASSES for where they start), vectorized along the row,
 * three passes over a row that stays in cache: the load (converting float16 or gathering a
 * strided row into a contiguous scratch row) fused with the max; exp(x - m), its sum and
 * the dot products the options need, storing exp where an output follows (log_softmax in
 * the AVX-512 build: x - m); then the output.
 * logsumexp reads long contiguous rows in one pass instead, part by part (lse_row), and
 * contiguous rows of up to PAIR_MAX_CLASSES run two per loop (pair_map, pair_ce).
 * Narrow rows are transposed NARROW_TILE at a time into a (C, tile) scratch so that every
 * vector lane is a row and the same passes run across rows.
 */

#define CAT2_(a, b) a##_##b
#define CAT2(a, b) CAT2_(a, b)
#define K(f) NAME(CAT2(f, SFX))

/* Wide rows are vectorized EXP_BLOCK entries at a time (a multiple of every vector width
 * used), their last C % EXP_BLOCK entries apart (see row_max and exp_tail). */
#define EXP_BLOCK 16

/* The max of m and the n entries of contiguous x (NaN entries are skipped): a vector loop
 * over whole blocks of EXP_BLOCK entries, then the rest one by one. An omp simd max over
 * all n entries, where n is not a multiple of the vector width, ends in GCC's epilogue,
 * which keeps the partial maxima in a stack array, updates one lane with scalar stores
 * and then reads the array back as a vector: a store-to-load forwarding failure that
 * made rows of 100 classes 1.5-2x as slow per logit as rows of 96 or 112 on Zen 4. */
static ALWAYS_INLINE T K(row_max)(const T *x, ptrdiff_t n, T m)
{
    const ptrdiff_t B = n - n % EXP_BLOCK;
#pragma omp simd reduction(max : m)
    for (ptrdiff_t j = 0; j < B; j++)
        m = x[j] > m ? x[j] : m;
    for (ptrdiff_t j = B; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

/* Load row x (stride cs) as T and return it with its max (NaN entries are skipped: they
 * make the sum NaN later, which is what every result of that row must be). */
static inline const T *K(load_max)(const S *x, ptrdiff_t cs, ptrdiff_t C, T *buf, T *max)
{
#if SAME
    if (cs == 1) {
        *max = K(row_max)(x, C, -INFINITY);
        return x;
    }
#endif
#ifdef LD_ROW
    if (cs == 1) {
        LD_ROW(x, buf, C);
        *max = K(row_max)(buf, C, -INFINITY);
        return buf;
    }
#endif
    if (cs == 1) {
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            buf[j] = LD(x[j]);
    } else {
        for (ptrdiff_t j = 0; j < C; j++)
            buf[j] = LD(x[j * cs]);
    }
    *max = K(row_max)(buf, C, -INFINITY);
    return buf;
}

static inline const T *K(load)(const S *x, ptrdiff_t cs, ptrdiff_t C, T *buf)
{
#if SAME
    if (cs == 1)
        return x;
#endif
#ifdef LD_ROW
    if (cs == 1) {
        LD_ROW(x, buf, C);
        return buf;
    }
#endif
    if (cs == 1) {
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            buf[j] = LD(x[j]);
    } else {
        for (ptrdiff_t j = 0; j < C; j++)
            buf[j] = LD(x[j * cs]);
    }
    return buf;
}

/* Where an output row is computed: in place when it is contiguous T, else in buf. */
static inline T *K(out_row)(S *o, ptrdiff_t cs, T *buf)
{
#if SAME
    if (cs == 1)
        return o;
#endif
    (void)o, (void)cs;
    return buf;
}

/* o = row * scale (scale 1: a plain store), rounding once to S. */
static inline void K(store_scaled)(S *o, ptrdiff_t cs, ptrdiff_t C, T *row, T scale)
{
    if ((void *)o == (void *)row) {
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            row[j] = row[j] * scale;
    } else if (cs == 1) {
#ifdef ST_ROW
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            row[j] = row[j] * scale; /* row is scratch here: o is not T */
        ST_ROW(row, o, C);
#else
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            o[j] = ST(row[j] * scale);
#endif
    } else {
        for (ptrdiff_t j = 0; j < C; j++)
            o[j * cs] = ST(row[j] * scale);
    }
}

static inline void K(store)(S *o, ptrdiff_t cs, ptrdiff_t C, const T *row)
{
    if ((const void *)o == (const void *)row)
        return;
    if (cs == 1) {
#ifdef ST_ROW
        ST_ROW(row, o, C);
#else
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            o[j] = ST(row[j]);
#endif
    } else {
        for (ptrdiff_t j = 0; j < C; j++)
            o[j * cs] = ST(row[j]);
    }
}

/* The last C % EXP_BLOCK entries of a wide row get their exps from one more, padded
 * vector instead of a scalar remainder loop, which paid a scalar exp per entry (some 40% of
 * the time of a 100-class row). v[j] = exp(xr[j] - m) for j < n, 0 after. */

static inline void K(exp_tail)(const T *xr, ptrdiff_t n, T m, T *v)
{
    T in[EXP_BLOCK];
    for (int j = 0; j < EXP_BLOCK; j++)
        in[j] = j < n ? xr[j] : m;
#pragma omp simd
    for (int j = 0; j < EXP_BLOCK; j++)
        v[j] = SEL(j < n, EXPN(in[j] - m), (T)0);
}

/* NaN when the n entries x[0], x[stride], ... hold a NaN, else 0: the logsumexp of a row
 * whose max is +inf is that max plus this (exp of the row's other entries is not needed). */
static inline T K(nan_of)(const T *x, ptrdiff_t stride, ptrdiff_t n)
{
    T nan = 0;
    for (ptrdiff_t j = 0; j < n; j++)
        nan += x[j * stride] != x[j * stride] ? x[j * stride] : (T)0;
    return nan;
}

/* sum_j exp(x_j - m), storing each exp in e when e is not NULL. */
static inline T K(sum_exp)(const T *xr, ptrdiff_t C, T m, T *e)
{
#ifdef EXP_SUM_ROW
    return EXP_SUM_ROW(xr, C, m, e, NULL, NULL, NULL);
#else
    const ptrdiff_t B = C - C % EXP_BLOCK;
    T s = 0;
    if (e) {
#pragma omp simd reduction(+ : s)
        for (ptrdiff_t j = 0; j < B; j++) {
            T v = EXPN(xr[j] - m);
            e[j] = v;
            s += v;
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (ptrdiff_t j = 0; j < B; j++)
            s += EXPN(xr[j] - m);
    }
    if (B < C) {
        T v[EXP_BLOCK];
        K(exp_tail)(xr + B, C - B, m, v);
        for (ptrdiff_t j = B; j < C; j++) {
            if (e)
                e[j] = v[j - B];
            s += v[j - B];
        }
    }
    return s;
#endif
}

/* ---- wide rows ------------------------------------------------------------------- */

/* The cache lines of row i + ahead of x (row stride rs, classes contiguous; none past the
 * block's rows), asked for before they are needed. The hardware prefetchers fell behind
 * the narrow tiles' loads (gather: 1.4-2.7x faster with it at 10 and 32 classes, one
 * thread, same bits) and the class-index rows (the gradient 1.25x at 100 classes, the
 * forward 1.05-1.1x; AVX2 and baseline builds: the gradient 1.2-1.3x at 100 classes).
 * The AVX-512 build's wide rows, read with plain loads the prefetchers follow, take none
 * for the gradient's rows over 1 KB nor for the probability targets' (measured 0.65-0.96x
 * with it); softmax and log_softmax rows measured 0.8-1.13x and take none; nor do rows
 * over PREFETCH_MAX_BYTES. */
#define PREFETCH_MAX_BYTES 16384
static inline void K(prefetch_row)(const S *x, ptrdiff_t rs, ptrdiff_t i, ptrdiff_t ahead,
                                   ptrdiff_t rows, ptrdiff_t C)
{
    const ptrdiff_t bytes = C * (ptrdiff_t)sizeof(S);
    if (i + ahead >= rows || bytes > PREFETCH_MAX_BYTES)
        return;
    const char *row = (const char *)(x + (i + ahead) * rs);
    for (ptrdiff_t b = 0; b < bytes; b += 64)
        __builtin_prefetch(row + b);
    __builtin_prefetch(row + bytes - 1);
}

/* Rows of up to PAIR_MAX_CLASSES classes are latency-bound one at a time (max, then the
 * sum of exps, then 1/s or log s, then the output: each step waits for the last), so the
 * contiguous ones of softmax, log_softmax and the cross-entropy without label smoothing
 * run two rows per loop, each row's steps exactly as alone (the same bits). Measured at
 * 64-128 classes, one thread: 1.05-1.35x; from 200 classes on, no gain. */
#define PAIR_MAX_CLASSES 128

#if SAME
/* The max and the sum of exp(x - max) of contiguous rows x0 and x1, the exps stored in e0
 * and e1 unless they are NULL: sum_exp's loops, two rows per iteration. */
static ALWAYS_INLINE void K(pair_sum_exp)(const T *x0, const T *x1, ptrdiff_t C, T *e0, T *e1,
                                          T *max0, T *max1, T *sum0, T *sum1)
{
    T m0 = -INFINITY, m1 = -INFINITY;
    const ptrdiff_t W = C - C % EXP_BLOCK; /* the rest one by one: see row_max */
#pragma omp simd reduction(max : m0, m1)
    for (ptrdiff_t j = 0; j < W; j++) {
        m0 = x0[j] > m0 ? x0[j] : m0;
        m1 = x1[j] > m1 ? x1[j] : m1;
    }
    for (ptrdiff_t j = W; j < C; j++) {
        m0 = x0[j] > m0 ? x0[j] : m0;
        m1 = x1[j] > m1 ? x1[j] : m1;
    }
#ifdef EXP_SUM_ROW
    *max0 = m0, *max1 = m1;
    *sum0 = EXP_SUM_ROW(x0, C, m0, e0, NULL, NULL, NULL);
    *sum1 = EXP_SUM_ROW(x1, C, m1, e1, NULL, NULL, NULL);
#else
    const ptrdiff_t B = C - C % EXP_BLOCK;
    T s0 = 0, s1 = 0;
    if (e0) {
#pragma omp simd reduction(+ : s0, s1)
        for (ptrdiff_t j = 0; j < B; j++) {
            T v0 = EXPN(x0[j] - m0), v1 = EXPN(x1[j] - m1);
            e0[j] = v0;
            e1[j] = v1;
            s0 += v0;
            s1 += v1;
        }
    } else {
#pragma omp simd reduction(+ : s0, s1)
        for (ptrdiff_t j = 0; j < B; j++) {
            s0 += EXPN(x0[j] - m0);
            s1 += EXPN(x1[j] - m1);
        }
    }
    if (B < C) {
        T v0[EXP_BLOCK], v1[EXP_BLOCK];
        K(exp_tail)(x0 + B, C - B, m0, v0);
        K(exp_tail)(x1 + B, C - B, m1, v1);
        for (ptrdiff_t j = B; j < C; j++) {
            if (e0) {
                e0[j] = v0[j - B];
                e1[j] = v1[j - B];
            }
            s0 += v0[j - B];
            s1 += v1[j - B];
        }
    }
    *max0 = m0, *max1 = m1, *sum0 = s0, *sum1 = s1;
#endif
}

/* softmax (log = 0) or log_softmax (log = 1) of contiguous rows x0 and x1 into o0 and o1:
 * each as wide_map computes it for one row. */
static void K(pair_map)(const T *x0, const T *x1, T *o0, T *o1, ptrdiff_t C, int log)
{
    T m0, m1, s0, s1;
    K(pair_sum_exp)(x0, x1, C, log ? NULL : o0, log ? NULL : o1, &m0, &m1, &s0, &s1);
    if (log) {
        const T l0 = LOGT(s0), l1 = LOGT(s1);
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++) {
            o0[j] = (x0[j] - m0) - l0;
            o1[j] = (x1[j] - m1) - l1;
        }
    } else {
        const T k0 = (T)1 / s0, k1 = (T)1 / s1;
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++) {
            o0[j] = o0[j] * k0;
            o1[j] = o1[j] * k1;
        }
    }
}
#endif

static void K(wide_map)(const job_t *J, T *xbuf, T *obuf)
{
    ptrdiff_t first = 0; /* the rows before it were computed in pairs */
#if SAME
    if (J->classes <= PAIR_MAX_CLASSES && J->x_cs == 1 && J->o_cs == 1) {
        const T *X2 = (const T *)J->x;
        T *O2 = (T *)J->out;
        for (; first + 1 < J->rows; first += 2)
            K(pair_map)(X2 + first * J->x_rs, X2 + (first + 1) * J->x_rs, O2 + first * J->o_rs,
                        O2 + (first + 1) * J->o_rs, J->classes, J->op != OP_SOFTMAX);
    }
#endif
    const S *X = (const S *)J->x;
    S *O = (S *)J->out;
    const ptrdiff_t C = J->classes;
    for (ptrdiff_t i = first; i < J->rows; i++) {
        T m;
        const T *xr = K(load_max)(X + i * J->x_rs, J->x_cs, C, xbuf, &m);
        S *o = O + i * J->o_rs;
        T *orow = K(out_row)(o, J->o_cs, obuf);
        if (J->op == OP_SOFTMAX) {
            T s = K(sum_exp)(xr, C, m, orow);
            K(store_scaled)(o, J->o_cs, C, orow, (T)1 / s); /* torch multiplies by 1/s */
        } else {
#ifdef SHIFTED_SUM_ROW
            /* x - m is stored as the exps are summed, so that the output's writes overlap
             * the exps as softmax's do (a pass writing (x - m) - log s after the sum took
             * 1.2x as long from 1000 classes on, one thread; the AVX2 build's compiled
             * loops measured 0.89-1.16x that way and keep the pass). */
            T log_s = LOGT(SHIFTED_SUM_ROW(xr, C, m, orow));
#pragma omp simd
            for (ptrdiff_t j = 0; j < C; j++)
                orow[j] = orow[j] - log_s; /* torch's order: (x - m) - log s */
#else
            T log_s = LOGT(K(sum_exp)(xr, C, m, NULL));
#pragma omp simd
            for (ptrdiff_t j = 0; j < C; j++)
                orow[j] = (xr[j] - m) - log_s; /* torch's order: the max gets -log s */
#endif
            K(store)(o, J->o_cs, C, orow);
        }
    }
}

/* Rows of logsumexp are read in parts of LSE_PART entries (2 KB of T): a part's max comes
 * from memory and its exps then from the first-level cache while the hardware prefetchers
 * stream the next part in. A whole-row pass for the max and another for the exps (as the
 * other wide kernels do) kept the exps' time apart from the memory's: 1.06-1.2x slower
 * from 32000 classes on. (The kernels with a gradient store the exps: that write stream
 * beside the read of the parts measured slower than the two passes, and the loss must be
 * the same bits with and without the gradient.) */
#define LSE_PART (2048 / (ptrdiff_t)sizeof(T))

/* log sum_j exp(x_j) of contiguous row x in one pass: part by part, the part's max; when
 * it exceeds the max so far, the sum so far is rescaled by exp(old - new); then the part's
 * exps relative to the max so far. NaN entries never become the max and make the sum NaN;
 * while the max is -inf the exps are taken relative to 0 (exp(-inf) = 0), so a row of
 * -inf only gives log(0) = -inf; a max of +inf gives +inf, or NaN with a NaN. A row
 * stored in another dtype (float16) is converted a part at a time into buf (LSE_PART
 * entries of T), so its parts too are read from the first-level cache. */
static inline T K(lse_row)(const S *x, ptrdiff_t C, T *buf)
{
    T m = -INFINITY, s = 0;
    for (ptrdiff_t j0 = 0; j0 < C; j0 += LSE_PART) {
        const ptrdiff_t len = C - j0 < LSE_PART ? C - j0 : LSE_PART;
        const ptrdiff_t vec = len - len % EXP_BLOCK; /* all of it but in the last part */
#if SAME
        const T *xp = x + j0;
        (void)buf;
#else
        LD_ROW(x + j0, buf, len);
        const T *xp = buf;
#endif
        T mc = m;
#pragma omp simd reduction(max : mc)
        for (ptrdiff_t j = 0; j < vec; j++)
            mc = xp[j] > mc ? xp[j] : mc;
        for (ptrdiff_t j = vec; j < len; j++) /* the row's tail */
            mc = xp[j] > mc ? xp[j] : mc;
        if (mc > m) {
            if (m != -INFINITY)
                s = s * EXPN(m - mc);
            m = mc;
        }
        if (m == (T)INFINITY) { /* no exp needed: +inf, or NaN where the row holds one */
            T nan = 0;
            for (ptrdiff_t j = 0; j < C; j++)
                nan += LD(x[j]) != LD(x[j]) ? LD(x[j]) : (T)0;
            return m + nan;
        }
        const T base = m == -INFINITY ? (T)0 : m;
#ifdef EXP_SUM_ROW
        s += EXP_SUM_ROW(xp, len, base, NULL, NULL, NULL, NULL);
#else
        T part = 0;
#pragma omp simd reduction(+ : part)
        for (ptrdiff_t j = 0; j < vec; j++)
            part += EXPN(xp[j] - base);
        if (vec < len) { /* one padded vector of exps */
            T v[EXP_BLOCK];
            K(exp_tail)(xp + vec, len - vec, base, v);
            for (ptrdiff_t j = vec; j < len; j++)
                part += v[j - vec];
        }
        s += part;
#endif
    }
    return (m == -INFINITY ? (T)0 : m) + LOGT(s);
}

static void K(wide_logsumexp)(const job_t *J, T *xbuf)
{
    const S *X = (const S *)J->x;
    T *result = (T *)J->result;
    const ptrdiff_t C = J->classes;
    if (J->x_cs == 1 && C > 2 * LSE_PART) { /* rows read from memory in parts */
        for (ptrdiff_t i = 0; i < J->rows; i++)
            result[i] = K(lse_row)(X + i * J->x_rs, C, xbuf);
        return;
    }
    /* Shorter rows (the two passes measured 1.06-1.1x faster at 200 classes), and rows
     * converted or gathered into xbuf first (read from memory by that copy). */
    for (ptrdiff_t i = 0; i < J->rows; i++) {
        T m;
        const T *xr = K(load_max)(X + i * J->x_rs, J->x_cs, C, xbuf, &m);
        if (m == (T)INFINITY) { /* +inf, or NaN where the row holds one: no exp needed */
            result[i] = m + K(nan_of)(xr, 1, C);
            continue;
        }
        if (isinf(m)) /* all -inf gives -inf (NaN with a NaN), as log(0) */
            m = 0;
        result[i] = m + LOGT(K(sum_exp)(xr, C, m, NULL));
    }
}

#if SAME
/* The cross-entropy without smoothing of contiguous rows x0 and x1 (targets y0, y1), each
 * as wide_ce_index computes it for one row (see PAIR_MAX_CLASSES): losses in *l0, *l1 and,
 * when o0 is not NULL, the gradients g_i (p_i - onehot(y_i)) w_i into o0, o1 (which may
 * be x0, x1). */
static void K(pair_ce)(const T *x0, const T *x1, ptrdiff_t y0, ptrdiff_t y1, ptrdiff_t C,
                       T w0, T w1, T g0, T g1, T *l0, T *l1, T *o0, T *o1)
{
    const T x_y0 = x0[y0], x_y1 = x1[y1]; /* read before the gradient may overwrite them */
    T m0, m1, s0, s1;
    K(pair_sum_exp)(x0, x1, C, o0, o1, &m0, &m1, &s0, &s1);
    *l0 = w0 * (LOGT(s0) + (m0 - x_y0));
    *l1 = w1 * (LOGT(s1) + (m1 - x_y1));
    if (!o0)
        return;
    const T hit0 = g0 * w0, hit1 = g1 * w1, k0 = hit0 / s0, k1 = hit1 / s1;
#pragma omp simd
    for (ptrdiff_t j = 0; j < C; j++) {
        o0[j] = o0[j] * k0;
        o1[j] = o1[j] * k1;
    }
    o0[y0] -= hit0;
    o1[y1] -= hit1;
}
#endif

/* Row i's class-index target (see job_t): returns whether the row counts; *cls is its
 * class (0 when ignored) and *wt its weight. */
static ALWAYS_INLINE int K(row_target)(const job_t *J, ptrdiff_t i, ptrdiff_t *cls, T *wt)
{
    const int64_t v = J->y[i];
    const int keep = J->valid ? J->valid[i] : !J->raw_targets || v != J->ignore_index;
    *cls = keep ? (ptrdiff_t)v : 0;
    if (J->wy)
        *wt = ((const T *)J->wy)[i];
    else
        *wt = J->raw_targets && J->class_weight ? ((const T *)J->class_weight)[*cls] : (T)1;
    return keep;
}

static void K(wide_ce_index)(const job_t *J, T *xbuf, T *obuf)
{
    const S *X = (const S *)J->x;
    S *O = (S *)J->out;
    const ptrdiff_t C = J->classes;
    const T *cw = (const T *)J->class_weight, *G = (const T *)J->g;
    T *loss = (T *)J->result;
    const T eps = (T)J->smoothing, W = (T)J->weight_sum;
    const T keep = (T)(1.0 - J->smoothing), eps_c = (T)(J->smoothing / (double)C);
    const T eps_w_c = (T)(J->smoothing * J->weight_sum / (double)C);
#if SAME
    const int pairs = eps == 0 && C <= PAIR_MAX_CLASSES && J->x_cs == 1 && (!O || J->o_cs == 1);
#endif
#ifdef EXP_SUM_ROW /* with the gradient, rows over 1 KB: 1.1-1.2x faster without (1000-4000) */
    const ptrdiff_t ahead_max = O ? 1024 : PREFETCH_MAX_BYTES;
#else /* the compiler-vectorized loops: 1.0-1.19x slower without it at 1000-4000 */
    const ptrdiff_t ahead_max = PREFETCH_MAX_BYTES;
#endif
    const int ahead = J->x_cs == 1 && C * (ptrdiff_t)sizeof(S) <= ahead_max;
    for (ptrdiff_t i = 0; i < J->rows; i++) {
        if (ahead) { /* two rows ahead: rows i + 2 and i + 3 when i runs in pairs */
            K(prefetch_row)(X, J->x_rs, i, 2, J->rows, C);
            K(prefetch_row)(X, J->x_rs, i, 3, J->rows, C);
        }
        ptrdiff_t y;
        T wt;
        const int counts = K(row_target)(J, i, &y, &wt);
#if SAME
        ptrdiff_t y1;
        T wt1;
        if (pairs && counts && i + 1 < J->rows && K(row_target)(J, i + 1, &y1, &wt1)) {
            T *o0 = O ? (T *)O + i * J->o_rs : NULL;
            K(pair_ce)(X + i * J->x_rs, X + (i + 1) * J->x_rs, y, y1, C, wt, wt1,
                       G ? G[i] : (T)J->g_scalar, G ? G[i + 1] : (T)J->g_scalar, loss + i,
                       loss + i + 1, o0, o0 ? o0 + J->o_rs : NULL);
            i++;
            continue;
        }
#endif
        S *o = O ? O + i * J->o_rs : NULL;
        /* The exps go to the output row, or to the free scratch row without a gradient. */
        T *orow = o ? K(out_row)(o, J->o_cs, obuf) : obuf;
        if (!counts) { /* an ignored row: exactly 0, whatever its logits */
            loss[i] = 0;
            if (o) {
                memset(orow, 0, (size_t)C * sizeof(T));
                K(store)(o, J->o_cs, C, orow);
            }
            continue;
        }
        T m;
        const T *xr = K(load_max)(X + i * J->x_rs, J->x_cs, C, xbuf, &m);
        const T x_y = xr[y]; /* read before the gradient may overwrite the row */
        T s = 0, dot = 0;
        if (eps != 0) { /* sum_c w_c (x_c - m), for the smoothing term */
#ifdef EXP_SUM_ROW
            s = EXP_SUM_ROW(xr, C, m, orow, cw, &dot, NULL);
#else
            const ptrdiff_t B = C - C % EXP_BLOCK;
            if (cw) {
#pragma omp simd reduction(+ : s, dot)
                for (ptrdiff_t j = 0; j < B; j++) {
                    T d = xr[j] - m;
                    T v = EXPN(d);
                    dot += cw[j] * d;
                    orow[j] = v;
                    s += v;
                }
            } else {
#pragma omp simd reduction(+ : s, dot)
                for (ptrdiff_t j = 0; j < B; j++) {
                    T d = xr[j] - m;
                    T v = EXPN(d);
                    dot += d;
                    orow[j] = v;
                    s += v;
                }
            }
            if (B < C) {
                T v[EXP_BLOCK];
                K(exp_tail)(xr + B, C - B, m, v);
                for (ptrdiff_t j = B; j < C; j++) {
                    T d = xr[j] - m;
                    dot += cw ? cw[j] * d : d;
                    orow[j] = v[j - B];
                    s += v[j - B];
                }
            }
#endif
        } else {
            s = K(sum_exp)(xr, C, m, o ? orow : NULL); /* no stores without a gradient */
        }
        T log_sum = LOGT(s);
        T nll = log_sum + (m - x_y); /* -log_softmax(x)[y] = lse - x[y] */
        loss[i] = eps != 0 ? keep * (wt * nll) + eps_c * (W * log_sum - dot) : wt * nll;
        if (!o)
            continue;
        /* grad = g ((1 - eps) w[y] + eps W / C) p - g (1 - eps) w[y] onehot(y) - g eps/C w */
        T g = G ? G[i] : (T)J->g_scalar;
        T hit = eps != 0 ? g * (keep * wt) : g * wt;
        T coef = eps != 0 ? hit + g * eps_w_c : hit;
        T k = coef / s;
        if (eps == 0) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < C; j++)
                orow[j] = orow[j] * k;
            orow[y] -= hit;
        } else { /* one pass; the target's entry then redone in the order above */
            T spread = g * eps_c, e_y = orow[y];
            if (cw) {
#pragma omp simd
                for (ptrdiff_t j = 0; j < C; j++)
                    orow[j] = orow[j] * k - spread * cw[j];
            } else {
#pragma omp simd
                for (ptrdiff_t j = 0; j < C; j++)
                    orow[j] = orow[j] * k - spread;
            }
            orow[y] = (e_y * k - hit) - (cw ? spread * cw[y] : spread);
        }
        K(store)(o, J->o_cs, C, orow);
    }
}

/* q = t * scale + offset: the weighted, smoothed probability target. */
static inline const T *K(load_q)(const job_t *J, const S *t, T *buf)
{
    const ptrdiff_t C = J->classes;
    const T *tr = K(load)(t, J->t_cs, C, buf);
    const T *sc = (const T *)J->scale, *of = (const T *)J->offset;
    if (sc) {
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            buf[j] = tr[j] * sc[j];
        tr = buf;
    }
    if (of) {
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            buf[j] = tr[j] + of[j];
        tr = buf;
    }
    return tr;
}

static void K(wide_ce_prob)(const job_t *J, T *xbuf, T *obuf, T *tbuf)
{
    const S *X = (const S *)J->x, *TT = (const S *)J->t;
    S *O = (S *)J->out;
    const ptrdiff_t C = J->classes;
    const T *G = (const T *)J->g;
    T *loss = (T *)J->result;
    for (ptrdiff_t i = 0; i < J->rows; i++) {
        T m;
        const T *xr = K(load_max)(X + i * J->x_rs, J->x_cs, C, xbuf, &m);
        const T *q = K(load_q)(J, TT + i * J->t_rs, tbuf);
        S *o = O ? O + i * J->o_rs : NULL;
        T *orow = o ? K(out_row)(o, J->o_cs, obuf) : obuf;
        T s = 0, sum_q = 0, dot = 0;
#ifdef EXP_SUM_ROW
        /* No gradient: the exps are not stored (1.06-1.09x faster at 1000-262144 classes). */
        s = EXP_SUM_ROW(xr, C, m, o ? orow : NULL, q, &dot, &sum_q);
#else
        const ptrdiff_t B = C - C % EXP_BLOCK;
#pragma omp simd reduction(+ : s, sum_q, dot)
        for (ptrdiff_t j = 0; j < B; j++) {
            T d = xr[j] - m;
            T v = EXPN(d);
            sum_q += q[j];
            dot += q[j] * d;
            orow[j] = v;
            s += v;
        }
        if (B < C) {
            T v[EXP_BLOCK];
            K(exp_tail)(xr + B, C - B, m, v);
            for (ptrdiff_t j = B; j < C; j++) {
                sum_q += q[j];
                dot += q[j] * (xr[j] - m);
                orow[j] = v[j - B];
                s += v[j - B];
            }
        }
#endif
        /* loss = sum_c q_c (lse - x_c) = (sum q) log s - sum_c q_c (x_c - m) */
        loss[i] = sum_q * LOGT(s) - dot;
        if (!o)
            continue;
        T g = G ? G[i] : (T)J->g_scalar;
        T coef = g * sum_q / s; /* grad = g (p sum q - q) */
#pragma omp simd
        for (ptrdiff_t j = 0; j < C; j++)
            orow[j] = orow[j] * coef - q[j] * g;
        K(store)(o, J->o_cs, C, orow);
    }
}

/* ---- narrow rows: NARROW_TILE rows at a time, lanes across rows ------------------- */

#define TL NARROW_TILE
#define TLS NARROW_STRIDE

/* The exps of one class of a tile, exp(xc[r] - m[r]) for each row r: where the build has
 * EXP_LANES they are computed ahead into ex (TILE_EXPS) and read from it, else each is
 * computed where it is used (TILE_EXP(ex, r, d) is then EXPN(d)). */
#ifdef EXP_LANES
#define TILE_EXPS(xc, m, ex) EXP_LANES((xc), (m), (ex), TL)
#define TILE_EXP(ex, r, d) ((ex)[r])
#else
#define TILE_EXPS(xc, m, ex) (void)(ex)
#define TILE_EXP(ex, r, d) EXPN(d)
#endif

/* Part c of C of the prefetch of the n rows from x (row stride rs, classes contiguous):
 * the cache lines of the next tile, spread over the current tile's gather. The hardware
 * prefetchers do not follow vector gathers, and one burst of prefetches stalls on the
 * cache's miss buffers: this way a tile out of the cache costs about what it costs in it
 * (C = 32, float32, one thread: logsumexp 1.0-1.3 ns per logit -> 0.7-0.85, against 0.6
 * with the rows in L2). */
static inline void K(prefetch_part)(const S *x, ptrdiff_t rs, ptrdiff_t n, ptrdiff_t C,
                                    ptrdiff_t c)
{
    const ptrdiff_t row_bytes = C * (ptrdiff_t)sizeof(S);
    if (rs == C) { /* contiguous rows: part c of one span */
        const char *p = (const char *)x;
        const ptrdiff_t span = n * row_bytes;
        const ptrdiff_t step = ((span + C - 1) / C + 63) & ~(ptrdiff_t)63;
        for (ptrdiff_t b = c * step; b < (c + 1) * step && b < span; b += 64)
            __builtin_prefetch(p + b);
        if (c == C - 1) /* the span's last line, when it does not start on a line */
            __builtin_prefetch(p + span - 1);
        return;
    }
    for (ptrdiff_t r = (c * n + C - 1) / C; r < ((c + 1) * n + C - 1) / C; r++) {
        const char *row = (const char *)(x + r * rs);
        for (ptrdiff_t b = 0; b < row_bytes; b += 64)
            __builtin_prefetch(row + b);
        __builtin_prefetch(row + row_bytes - 1);
    }
}

/* xt[c][r] = x[i0 + r][c] for r < n; padding rows hold 0 (computed, never stored).
 * Contiguous classes, where the build has TILE_LOAD: TILE_GROUP rows at a time through a
 * transpose in registers (about 1.1-1.5x faster than the vector gathers below at 10-32
 * classes, and as fast or slower from 48 on, where logsumexp's tiles keep the gathers;
 * float16 tiles, whose gathers also convert, take the transposes up to 128 classes:
 * logsumexp 1.5-1.8x faster at 64-128),
 * the rows past the last full group entry by entry. Otherwise a full tile is loaded a
 * class at a time as vector gathers (the fastest of the orders measured), the next tile's
 * rows (of the rows_left from x on) prefetched when classes are contiguous; the last,
 * partial tile of a block element by element. */
static inline void K(gather)(const S *x, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t n, ptrdiff_t C,
                             T *xt, ptrdiff_t rows_left)
{
    const ptrdiff_t n_next = cs != 1 ? 0 : rows_left - TL < TL ? rows_left - TL : TL;
    ptrdiff_t r0 = 0; /* rows already in the tile: those of whole groups */
#ifdef TILE_LOAD
    if (cs == 1 && C <= (SAME ? NARROW_MAX_CLASSES : NARROW_LOGSUMEXP_MAX_CLASSES)) {
        /* The next tile's rows first: the hardware prefetchers fell behind these loads
         * (probability targets, which load two tiles, one thread: 1.6-2.6x faster). */
        for (ptrdiff_t r = 0; r < n_next; r++)
            K(prefetch_row)(x + TL * rs, rs, r, 0, n_next, C);
        for (; r0 + TILE_GROUP <= n; r0 += TILE_GROUP)
            TILE_LOAD(x + r0 * rs, rs, C, xt + r0);
        if (r0 == TL)
            return;
    }
#endif
    for (ptrdiff_t c = 0; c < C; c++) {
        const S *xc = x + c * cs;
        T *dst = xt + c * TLS;
        if (n_next > 0)
            K(prefetch_part)(x + TL * rs, rs, n_next, C, c);
        if (n == TL) { /* then r0 = 0: whole tiles of contiguous classes returned above */
#pragma omp simd
            for (int r = 0; r < TL; r++)
                dst[r] = LD(xc[r * rs]);
            continue;
        }
        for (ptrdiff_t r = r0; r < n; r++)
            dst[r] = LD(xc[r * rs]);
        for (ptrdiff_t r = n; r < TL; r++)
            dst[r] = 0;
    }
}

/* The inverse of gather: o[i0 + r][c] = ot[c][r] for r < n, rounded once to S.
 * Contiguous classes: TILE_GROUP rows at a time through registers where the build has
 * TILE_STORE, the other rows in memory order, element by element (vector scatters
 * measured slower). */
static inline void K(scatter)(S *o, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t n, ptrdiff_t C,
                              const T *ot)
{
    if (cs == 1) {
        ptrdiff_t r0 = 0;
#ifdef TILE_STORE
        for (; r0 + TILE_GROUP <= n; r0 += TILE_GROUP)
            TILE_STORE(o + r0 * rs, rs, C, ot + r0);
#endif
        for (ptrdiff_t r = r0; r < n; r++) {
            S *orow = o + r * rs;
            for (ptrdiff_t c = 0; c < C; c++)
                orow[c] = ST(ot[c * TLS + r]);
        }
        return;
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        S *oc = o + c * cs;
        const T *src = ot + c * TLS;
        for (ptrdiff_t r = 0; r < n; r++)
            oc[r * rs] = ST(src[r]);
    }
}

static inline void K(tile_max)(const T *xt, ptrdiff_t C, T *m)
{
#pragma omp simd
    for (int r = 0; r < TL; r++)
        m[r] = -INFINITY;
    for (ptrdiff_t c = 0; c < C; c++) {
#pragma omp simd
        for (int r = 0; r < TL; r++)
            m[r] = xt[c * TLS + r] > m[r] ? xt[c * TLS + r] : m[r];
    }
}

/* s[r] = sum_c exp(xt[c][r] - m[r]), storing the exps in et (which may be xt) unless it is
 * NULL. */
static inline void K(tile_sum_exp)(const T *xt, ptrdiff_t C, const T *m, T *s, T *et)
{
#pragma omp simd
    for (int r = 0; r < TL; r++)
        s[r] = 0;
    for (ptrdiff_t c = 0; c < C; c++) {
        T ex[TL];
        TILE_EXPS(xt + c * TLS, m, ex);
        if (et) {
#pragma omp simd
            for (int r = 0; r < TL; r++) {
                T v = TILE_EXP(ex, r, xt[c * TLS + r] - m[r]);
                et[c * TLS + r] = v;
                s[r] += v;
            }
        } else {
#pragma omp simd
            for (int r = 0; r < TL; r++)
                s[r] += TILE_EXP(ex, r, xt[c * TLS + r] - m[r]);
        }
    }
}

/* tile_sum_exp with the exps stored over xt, and dot[r] += sum_c w_c (xt[c][r] - m[r])
 * (w_c = 1 without class weights) in the same pass: a pass of its own measured 0.35 ns
 * per logit more at 32 classes. */
static inline void K(tile_sum_exp_dot)(T *xt, ptrdiff_t C, const T *m, T *s, const T *cw,
                                       T *dot)
{
#pragma omp simd
    for (int r = 0; r < TL; r++)
        s[r] = 0;
    for (ptrdiff_t c = 0; c < C; c++) {
        const T w = cw ? cw[c] : (T)1;
        T ex[TL];
        TILE_EXPS(xt + c * TLS, m, ex);
#pragma omp simd
        for (int r = 0; r < TL; r++) {
            T d = xt[c * TLS + r] - m[r];
            T v = TILE_EXP(ex, r, d);
            dot[r] += w * d;
            xt[c * TLS + r] = v;
            s[r] += v;
        }
    }
}

/* dst[r] = src[r] for r < n (src NULL: fill for every r), fill for the padding rows. */
static inline void K(lanes)(T *dst, const T *src, ptrdiff_t n, T fill)
{
    if (src) {
#pragma omp simd
        for (ptrdiff_t r = 0; r < n; r++)
            dst[r] = src[r];
    } else {
        n = 0;
    }
    for (ptrdiff_t r = n; r < TL; r++)
        dst[r] = fill;
}

/* Rows i0, i0 + 1, ... of x (at most TL of them) as tile xt, with each row's max in m;
 * returns how many rows the tile holds. The first step of every narrow kernel. */
static inline ptrdiff_t K(load_tile)(const job_t *J, ptrdiff_t i0, ptrdiff_t C, T *xt, T *m)
{
    const ptrdiff_t n = J->rows - i0 < TL ? J->rows - i0 : TL;
    K(gather)((const S *)J->x + i0 * J->x_rs, J->x_rs, J->x_cs, n, C, xt, J->rows - i0);
    K(tile_max)(xt, C, m);
    return n;
}

static void K(narrow_map)(const job_t *J, T *xt)
{
    S *O = (S *)J->out;
    const ptrdiff_t C = J->classes;
    T m[TL], s[TL];
    for (ptrdiff_t i0 = 0; i0 < J->rows; i0 += TL) {
        const ptrdiff_t n = K(load_tile)(J, i0, C, xt, m);
        if (J->op == OP_SOFTMAX) {
            K(tile_sum_exp)(xt, C, m, s, xt);
#pragma omp simd
            for (int r = 0; r < TL; r++)
                s[r] = (T)1 / s[r];
            for (ptrdiff_t c = 0; c < C; c++) {
#pragma omp simd
                for (int r = 0; r < TL; r++)
                    xt[c * TLS + r] = xt[c * TLS + r] * s[r];
            }
        } else {
            K(tile_sum_exp)(xt, C, m, s, NULL); /* only the sums */
#pragma omp simd
            for (int r = 0; r < TL; r++)
                s[r] = LOGT(s[r]);
            for (ptrdiff_t c = 0; c < C; c++) {
#pragma omp simd
                for (int r = 0; r < TL; r++)
                    xt[c * TLS + r] = (xt[c * TLS + r] - m[r]) - s[r];
            }
        }
        K(scatter)(O + i0 * J->o_rs, J->o_rs, J->o_cs, n, C, xt);
    }
}

static void K(narrow_logsumexp)(const job_t *J, T *xt)
{
    T *result = (T *)J->result;
    const ptrdiff_t C = J->classes;
    T m[TL], s[TL];
    for (ptrdiff_t i0 = 0; i0 < J->rows; i0 += TL) {
        const ptrdiff_t n = K(load_tile)(J, i0, C, xt, m);
        int pos_inf = 0;
        T m0[TL];
#pragma omp simd reduction(| : pos_inf)
        for (int r = 0; r < TL; r++) {
            m0[r] = m[r];
            pos_inf |= m[r] == (T)INFINITY;
            m[r] = isinf(m[r]) ? (T)0 : m[r]; /* all -inf: log(0) = -inf, as in wide rows */
        }
        K(tile_sum_exp)(xt, C, m, s, NULL); /* only the sums */
#pragma omp simd
        for (int r = 0; r < TL; r++)
            s[r] = m[r] + LOGT(s[r]);
        if (pos_inf) /* the exps of a row holding +inf are garbage: +inf, or NaN */
            for (int r = 0; r < TL; r++)
                if (m0[r] == (T)INFINITY)
                    s[r] = m0[r] + K(nan_of)(xt + r, TLS, C);
        memcpy(result + i0, s, (size_t)n * sizeof(T));
    }
}

/* A probability-target tile in one pass over its classes: q = t * scale + offset with t
 * read from qt (gathered there), and per row s += exp(x - m), sum_q += q, dot += q (x - m),
 * in that order for every row.
 * With keep, the exps replace xt's entries and the q go to qt, for the gradient. */
static ALWAYS_INLINE void K(prob_pass)(ptrdiff_t C, T *xt, T *qt, const T *m, T *s, T *sum_q,
                                       T *dot, const T *sc, const T *of, int keep,
                                       int scaled, int offset)
{
    for (ptrdiff_t c = 0; c < C; c++) {
        T *xc = xt + c * TLS, *qc = qt + c * TLS;
        const T scale = scaled ? sc[c] : (T)1, off = offset ? of[c] : (T)0;
        T ex[TL];
        TILE_EXPS(xc, m, ex);
#pragma omp simd
        for (int r = 0; r < TL; r++) {
            T q = qc[r];
            if (scaled)
                q = q * scale;
            if (offset)
                q = q + off;
            T d = xc[r] - m[r];
            T v = TILE_EXP(ex, r, d);
            s[r] += v;
            sum_q[r] += q;
            dot[r] += q * d;
            if (keep) {
                xc[r] = v;
                qc[r] = q;
            }
        }
    }
}

/* The probability-target loss of narrow rows, and its gradient when J->out is set:
 * loss = (sum q) log s - sum_c q_c (x_c - m); grad = g (p sum q - q). */
static void K(narrow_ce_prob)(const job_t *J, T *xt, T *qt)
{
    const S *TT = (const S *)J->t;
    S *O = (S *)J->out;
    const ptrdiff_t C = J->classes;
    const T *G = (const T *)J->g, *sc = (const T *)J->scale, *of = (const T *)J->offset;
    T *loss = (T *)J->result;
    const T g_scalar = (T)J->g_scalar;
    const ptrdiff_t t_rs = J->t_rs, t_cs = J->t_cs; /* locals: stores to the tile could alias */
    T m[TL], s[TL], dot[TL], sum_q[TL], k[TL], gt[TL], lt[TL];
    for (ptrdiff_t i0 = 0; i0 < J->rows; i0 += TL) {
        const ptrdiff_t n = K(load_tile)(J, i0, C, xt, m);
        const S *t = TT + i0 * t_rs;
#pragma omp simd
        for (int r = 0; r < TL; r++)
            s[r] = sum_q[r] = dot[r] = 0;
        K(gather)(t, t_rs, t_cs, n, C, qt, J->rows - i0);
        /* A loop per case: a select inside the loop measured several times slower. */
        const int mode = (O != NULL) * 4 + (sc != NULL) * 2 + (of != NULL);
#define PROB_PASS(k, a, b)                                                                  \
    K(prob_pass)(C, xt, qt, m, s, sum_q, dot, (a) ? sc : NULL, (b) ? of : NULL, k, a, b)
        switch (mode) {
        case 0: PROB_PASS(0, 0, 0); break;
        case 1: PROB_PASS(0, 0, 1); break;
        case 2: PROB_PASS(0, 1, 0); break;
        case 3: PROB_PASS(0, 1, 1); break;
        case 4: PROB_PASS(1, 0, 0); break;
        case 5: PROB_PASS(1, 0, 1); break;
        case 6: PROB_PASS(1, 1, 0); break;
        default: PROB_PASS(1, 1, 1); break;
        }
#undef PROB_PASS
#pragma omp simd
        for (int r = 0; r < TL; r++)
            lt[r] = sum_q[r] * LOGT(s[r]) - dot[r];
        memcpy(loss + i0, lt, (size_t)n * sizeof(T));
        if (!O)
            continue;
        K(lanes)(gt, G ? G + i0 : NULL, n, g_scalar);
#pragma omp simd
        for (int r = 0; r < TL; r++)
            k[r] = gt[r] * sum_q[r] / s[r];
        for (ptrdiff_t c = 0; c < C; c++) {
#pragma omp simd
            for (int r = 0; r < TL; r++)
                xt[c * TLS + r] = xt[c * TLS + r] * k[r] - qt[c * TLS + r] * gt[r];
        }
        K(scatter)(O + i0 * J->o_rs, J->o_rs, J->o_cs, n, C, xt);
    }
}

/* wt[r] = cw[y[r]] ok[r] for r < n, 1 for the lanes from n on (y: the tile's classes,
 * padding lanes included, in [0, C)). Where the build has TILE_WEIGHTS, permutes of the
 * weights in registers (up to TILE_WEIGHTS_MAX_CLASSES classes); else a scalar loop,
 * since a vector gather measured 2.5x slower on AMD (and the compiler vectorizes this
 * loop with one unless told not to). */
#define TILE_WEIGHTS_MAX_CLASSES 32
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void K(class_weights)(const T *cw, ptrdiff_t C, const int32_t *y, const T *ok,
                             ptrdiff_t n, T *wt)
{
#ifdef TILE_WEIGHTS
    if (C <= TILE_WEIGHTS_MAX_CLASSES) {
        TILE_WEIGHTS(cw, C, y, ok, n, wt);
        return;
    }
#endif
    (void)C;
#if defined(__clang__)
#pragma clang loop vectorize(disable)
#endif
    for (ptrdiff_t r = 0; r < n; r++)
        wt[r] = cw[y[r]] * ok[r];
    for (ptrdiff_t r = n; r < TL; r++)
        wt[r] = 1;
}

/* The class-index targets of a tile's rows i0..i0+n-1 in lanes (see job_t): the class
 * (0 when ignored), whether the row counts and its weight; the padding lanes count, with
 * class 0 and weight 1. Returns whether a row of the tile is ignored. */
static int K(tile_targets)(const job_t *J, ptrdiff_t i0, ptrdiff_t n, int32_t *y, T *ok, T *wt)
{
    const int64_t *Y = J->y + i0;
    int ignored = 0;
    for (ptrdiff_t r = n; r < TL; r++) {
        y[r] = 0;
        ok[r] = 1;
    }
    /* Loops of one job each: a condition inside an omp simd loop can keep it scalar. */
    if (J->raw_targets) { /* a narrow tile's class fits int32 */
        const int64_t ignore = J->ignore_index;
#pragma omp simd reduction(+ : ignored)
        for (ptrdiff_t r = 0; r < n; r++) {
            const int keep = Y[r] != ignore;
            y[r] = keep ? (int32_t)Y[r] : 0;
            ok[r] = (T)keep;
            ignored += !keep;
        }
        if (J->class_weight)
            K(class_weights)((const T *)J->class_weight, J->classes, y, ok, n, wt);
        else
            K(lanes)(wt, NULL, 0, (T)1);
        return ignored != 0;
    }
#pragma omp simd
    for (ptrdiff_t r = 0; r < n; r++)
        y[r] = (int32_t)Y[r];
    K(lanes)(wt, J->wy ? (const T *)J->wy + i0 : NULL, n, (T)1);
    if (!J->valid) {
        K(lanes)(ok, NULL, 0, (T)1);
        return 0;
    }
    const unsigned char *valid = J->valid + i0;
#pragma omp simd reduction(+ : ignored)
    for (ptrdiff_t r = 0; r < n; r++) {
        ok[r] = (T)valid[r];
        ignored += !valid[r];
    }
    return ignored != 0;
}

static void K(narrow_ce)(const job_t *J, T *xt)
{
    S *O = (S *)J->out;
    const ptrdiff_t C = J->classes;
    const T *cw = (const T *)J->class_weight, *G = (const T *)J->g;
    T *loss = (T *)J->result;
    const T eps = (T)J->smoothing, W = (T)J->weight_sum;
    const T keep = (T)(1.0 - J->smoothing), eps_c = (T)(J->smoothing / (double)C);
    const T eps_w_c = (T)(J->smoothing * J->weight_sum / (double)C);
    T m[TL], s[TL], dot[TL], x_y[TL], k[TL], hit[TL], spread[TL];
    int32_t y[TL]; /* a narrow tile's class fits, and compares in lanes */
    const T g_scalar = (T)J->g_scalar; /* in a local: stores to the tile could alias */
    for (ptrdiff_t i0 = 0; i0 < J->rows; i0 += TL) {
        const ptrdiff_t n = K(load_tile)(J, i0, C, xt, m);
        T gt[TL], wt[TL], ok[TL], lt[TL];
        const int some_ignored = K(tile_targets)(J, i0, n, y, ok, wt);
#pragma omp simd
        for (int r = 0; r < TL; r++) {
            x_y[r] = xt[y[r] * TLS + r];
            dot[r] = 0;
        }
        if (eps != 0) /* with dot = sum_c w_c (x_c - m), for the smoothing term */
            K(tile_sum_exp_dot)(xt, C, m, s, cw, dot);
        else
            K(tile_sum_exp)(xt, C, m, s, xt);
        T ls[TL];
#pragma omp simd
        for (int r = 0; r < TL; r++)
            ls[r] = LOGT(s[r]);
        /* The upstream gradient into lanes too (padding rows get harmless values), then
         * the losses and the gradient's per-row factors, in vector lanes. */
        K(lanes)(gt, G ? G + i0 : NULL, n, g_scalar);
        if (eps != 0) {
#pragma omp simd
            for (int r = 0; r < TL; r++) {
                T nll = ls[r] + (m[r] - x_y[r]);
                T h = gt[r] * (keep * wt[r]);
                int use = ok[r] != 0; /* ignored rows: loss and factors exactly 0 */
                lt[r] = SEL(use, keep * (wt[r] * nll) + eps_c * (W * ls[r] - dot[r]), (T)0);
                k[r] = SEL(use, (h + gt[r] * eps_w_c) / s[r], (T)0);
                hit[r] = SEL(use, h, (T)0);
                spread[r] = SEL(use, gt[r] * eps_c, (T)0);
            }
        } else {
#pragma omp simd
            for (int r = 0; r < TL; r++) {
                T nll = ls[r] + (m[r] - x_y[r]);
                T h = gt[r] * wt[r];
                int use = ok[r] != 0;
                lt[r] = SEL(use, wt[r] * nll, (T)0);
                k[r] = SEL(use, h / s[r], (T)0);
                hit[r] = SEL(use, h, (T)0);
            }
        }
        memcpy(loss + i0, lt, (size_t)n * sizeof(T));
        if (!O)
            continue;
        for (ptrdiff_t c = 0; c < C; c++) {
            T w = cw ? cw[c] : (T)1;
            if (eps != 0) {
#pragma omp simd
                for (int r = 0; r < TL; r++) {
                    T v = xt[c * TLS + r] * k[r] - SEL(y[r] == (int32_t)c, hit[r], (T)0);
                    xt[c * TLS + r] = v - spread[r] * w;
                }
            } else {
#pragma omp simd
                for (int r = 0; r < TL; r++)
                    xt[c * TLS + r] =
                        xt[c * TLS + r] * k[r] - SEL(y[r] == (int32_t)c, hit[r], (T)0);
            }
        }
        if (some_ignored) { /* ignored rows: exactly 0, even when their logits hold NaN or inf */
            for (ptrdiff_t r = 0; r < n; r++)
                if (ok[r] == 0)
                    for (ptrdiff_t c = 0; c < C; c++)
                        xt[c * TLS + r] = 0;
        }
        K(scatter)(O + i0 * J->o_rs, J->o_rs, J->o_cs, n, C, xt);
    }
}

#undef TL
#undef TLS
#undef TILE_EXPS
#undef TILE_EXP

#if SAME
/* exp (func 0), log (1), EXPN (4), the wide rows' exp (5: EXP_SUM_ROW's where it is
 * defined, else EXPN), LOG12 (6) or the binary cross-entropy's exp(-|x|) (7: EXP_NEG_ABS
 * where it is defined, else EXPN) of each entry of a contiguous array, for the tests. */
static void K(elementwise)(const T *x, T *y, ptrdiff_t n, int func)
{
#ifdef EXP_SUM_ROW
    if (func == 5) {
        EXP_SUM_ROW(x, n, (T)0, y, NULL, NULL, NULL);
        return;
    }
#endif
#ifdef EXP_NEG_ABS
    if (func == 7) {
        EXP_NEG_ABS(x, y, n);
        return;
    }
#endif
    if (func == 7) {
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            y[i] = EXPN(-SEL(x[i] < (T)0, -x[i], x[i]));
        return;
    }
    if (func == 6) {
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            y[i] = LOG12(x[i]);
        return;
    }
    if (func == 4 || func == 5) { /* EXPN, for arguments <= 0 */
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            y[i] = EXPN(x[i]);
    } else if (func == 1) {
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            y[i] = LOGT(x[i]);
    } else {
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            y[i] = EXPT(x[i]);
    }
}
#endif

/* ---- entry ------------------------------------------------------------------------ */

static int K(run)(const job_t *J)
{
    const ptrdiff_t C = J->classes;
    /* The losses take one regime for a class count, gradient or not: the loss of
     * cross_entropy_with_grad is cross_entropy's, bit for bit. */
    const ptrdiff_t lse_max = sizeof(T) == sizeof(double) ? NARROW_LOGSUMEXP_MAX_CLASSES_F64
                                                          : NARROW_LOGSUMEXP_MAX_CLASSES;
#if !SAME && defined(TILE_LOAD) /* float16 rows: one at a time, converted (see job.h) */
    const ptrdiff_t narrow_max = NARROW_F16_MAX_CLASSES;
#else
    const ptrdiff_t narrow_max =
        J->op == OP_SOFTMAX ? NARROW_SOFTMAX_MAX_CLASSES : NARROW_MAX_CLASSES;
#endif
    const int narrow = C <= (J->op == OP_LOGSUMEXP ? lse_max : narrow_max);
    /* Scratch rows, 64-byte aligned so the vector loops split them the same way on every
     * thread and call (a different split would change how a row's sum is rounded). */
    size_t per = narrow ? (size_t)C * NARROW_STRIDE : (size_t)C;
    size_t bytes = ((per * sizeof(T) + 63) / 64) * 64;
    char *mem = aligned_alloc(64, 3 * bytes);
    if (!mem)
        return -1;
    T *b0 = (T *)mem, *b1 = (T *)(mem + bytes), *b2 = (T *)(mem + 2 * bytes);
    switch (J->op) {
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX:
        narrow ? K(narrow_map)(J, b0) : K(wide_map)(J, b0, b1);
        break;
    case OP_LOGSUMEXP:
        narrow ? K(narrow_logsumexp)(J, b0) : K(wide_logsumexp)(J, b0);
        break;
    case OP_CE_INDEX:
        narrow ? K(narrow_ce)(J, b0) : K(wide_ce_index)(J, b0, b1);
        break;
    case OP_CE_PROB:
        narrow ? K(narrow_ce_prob)(J, b0, b1) : K(wide_ce_prob)(J, b0, b1, b2);
        break;
    }
    aligned_free(mem);
    return 0;
}

#undef EXP_BLOCK
#undef K
