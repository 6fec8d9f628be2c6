/* What the Python side asks of one (rows, C) block, and the helpers every kernel shares. */
#ifndef SOFTXENT_JOB_H
#define SOFTXENT_JOB_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum op { OP_SOFTMAX, OP_LOG_SOFTMAX, OP_LOGSUMEXP, OP_CE_INDEX, OP_CE_PROB };

/* Strides are in elements. Per-row arrays (y, wy, valid, g, loss) and per-class arrays
 * (class_weight, scale, offset) are contiguous; the floating ones hold the compute type
 * (float for float16 and float32 blocks, double for float64). */
typedef struct {
    int op;
    ptrdiff_t rows, classes;
    const void *x;
    ptrdiff_t x_rs, x_cs;
    void *out; /* softmax/log_softmax output, or the gradient (NULL: no gradient) */
    ptrdiff_t o_rs, o_cs;
    const void *t; /* probability targets, the dtype of x */
    ptrdiff_t t_rs, t_cs;
    /* Class-index targets come prepared (y with ignored rows as 0, wy, valid) or, with
     * raw_targets, as given: a row whose y equals ignore_index is ignored, the others
     * weigh class_weight[y] (1 without class weights); wy and valid are then NULL. */
    const int64_t *y;            /* (rows,) class index */
    const void *wy;              /* (rows,) weight of the target, NULL: all ones */
    const unsigned char *valid;  /* (rows,) bool, NULL: all valid */
    int raw_targets;
    int64_t ignore_index;
    const void *g;               /* (rows,) upstream gradient, NULL: g_scalar */
    double g_scalar;
    const void *class_weight; /* (C,) or NULL: all ones */
    const void *scale;        /* (C,) or NULL: 1 */
    const void *offset;       /* (C,) or NULL: 0 */
    double smoothing, weight_sum;
    void *result; /* (rows,) loss or logsumexp */
} job_t;

typedef int (*kernel_fn)(const job_t *);

/* An elementwise loss over one (rows, cols) block (elementwise.h): every array has the
 * block's shape, the compute dtype and a column stride of 1; row strides in elements (0
 * for an operand broadcast across rows). flat: every row follows the previous one in every
 * array, so the block runs as one row of rows * cols entries. */
enum ew_loss { EW_MSE, EW_BCE_LOGITS, EW_BCE, EW_KL, EW_KL_LOG };
typedef struct {
    int loss;
    ptrdiff_t rows, cols;
    int hw, hp, hg, dg, flat; /* weight, pos_weight, g array, gradient given; flat rows */
    const void *x, *t, *w, *p, *g;
    ptrdiff_t x_rs, t_rs, w_rs, p_rs, g_rs;
    double g_scalar; /* the upstream gradient when there is no g array */
    void *loss_out, *grad;
    ptrdiff_t loss_rs, grad_rs;
} ew_job_t;

#if defined(_MSC_VER)
#include <malloc.h>
#define ALWAYS_INLINE __forceinline
#define aligned_alloc(alignment, size) _aligned_malloc((size), (alignment))
#define aligned_free _aligned_free
#else
#include <stdlib.h>
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define aligned_free free
#endif

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint64_t f64_bits(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }
static inline double f64_from_bits(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }

/* c ? a : b as bit operations. GCC turns a ternary with a constant operand into a branch
 * (it propagates the constant through the rest of the function), and a branch stops the
 * loop from being vectorized; masks keep it straight-line code. */
static inline uint32_t sel_u32(int c, uint32_t a, uint32_t b)
{
    uint32_t m = (uint32_t)0 - (uint32_t)(c != 0);
    return (a & m) | (b & ~m);
}
static inline float sel_f32(int c, float a, float b)
{
    uint32_t m = (uint32_t)0 - (uint32_t)(c != 0);
    return f32_from_bits((f32_bits(a) & m) | (f32_bits(b) & ~m));
}
static inline double sel_f64(int c, double a, double b)
{
    uint64_t m = (uint64_t)0 - (uint64_t)(c != 0);
    return f64_from_bits((f64_bits(a) & m) | (f64_bits(b) & ~m));
}

/* Rows with at most NARROW_MAX_CLASSES classes (NARROW_SOFTMAX_MAX_CLASSES for softmax)
 * are computed NARROW_TILE at a time, transposed so that the vector lanes run across rows;
 * so are logsumexp's rows of up to NARROW_LOGSUMEXP_MAX_CLASSES classes
 * (NARROW_LOGSUMEXP_MAX_CLASSES_F64 in float64), which write nothing back row by row
 * (where the transpose back would cost more than the lanes across rows save). The
 * cross-entropy forward keeps the limit of its gradient, so that its loss is the gradient
 * call's bit for bit. The limits are where the two regimes measured even (one thread,
 * x86-64-v4; the float64 logsumexp limit on 2 threads, where rows of 56-128 classes ran
 * 1.2-1.55x faster along the row): at 33 and 40 float32 classes the tiles took
 * 0.83-0.89x the wide rows' time for the cross-entropy with gradient and log_softmax (the
 * forward alone 0.40-0.45x, probability targets 0.54-0.74x; the AVX2 and baseline builds
 * 0.47-0.82x), at 48 1.03-1.09x; softmax's rows were 1.33x faster along the row from 33
 * on; float64 at 33-40 measured even (0.79-1.06x). Longer rows are vectorized along the
 * row. In a tile, one class's entries lie NARROW_STRIDE apart:
 * the 16 entries of padding keep the transposes' strided accesses off a power-of-two
 * stride (measured 10-20% faster). */
#define NARROW_MAX_CLASSES 40
#define NARROW_SOFTMAX_MAX_CLASSES 32
/* Rows stored as float16 run along the row one at a time (no pairs of rows), each
 * converted into a scratch row and back: against the AVX-512 build's tiles (moved through
 * register transposes) they took 1.5-2.2x the time at 64 and 100 classes for the
 * cross-entropy and log_softmax, 1.1-1.65x for softmax and probability targets (the
 * latter's gradient even at 64), and 2.6-5.5x at 33-40; at 128 they were even or faster
 * (1.0-1.3x) (one thread, x86-64-v4). There every kernel but logsumexp takes tiles up to
 * this many float16 classes; the AVX2 build's tiles, whose gathers convert, were
 * 1.15-1.8x slower at 64 and 100 classes and keep the limits above. */
#define NARROW_F16_MAX_CLASSES 100
#define NARROW_LOGSUMEXP_MAX_CLASSES 128
#define NARROW_LOGSUMEXP_MAX_CLASSES_F64 48
#define NARROW_TILE 64
#define NARROW_STRIDE (NARROW_TILE + 16)

#endif
