/* softxent._core: the native row kernels behind softxent's NumPy functions.
 *
 * Design (the reasons, once):
 * - One pass per row where the maths allows it, every later pass reading the row from
 *   cache; float16 is converted in the kernel (F16C instructions where the CPU has them),
 *   never materialized as a float32 copy.
 * - Plain C and the CPython buffer protocol: no build dependency beyond a C compiler, no
 *   NumPy headers (the blocks arrive as strided buffers; Python validates everything).
 * - The same kernel source is compiled for several instruction sets (AVX-512, AVX2+FMA,
 *   and the platform baseline, which is SSE2 on x86-64 and NEON on arm64); the widest the
 *   CPU supports is picked at import. Never -march=native, never -ffast-math: NaN and inf
 *   follow torch's semantics, and `#pragma omp simd` reductions vectorize without it.
 * - Kernels release the GIL; softxent's thread pool runs blocks in parallel. Every row is
 *   computed alone, so results do not depend on blocks or threads.
 * - A call returns False, doing nothing, for a layout it does not take (a stride that is
 *   not a whole number of elements, a misaligned buffer): the caller falls back to the
 *   NumPy kernels, which are also the reference these kernels are tested against.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "job.h"
#include "buffers.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h> /* F16C and AVX-512 conversions, used inside the target regions */
#endif

#define NAME_3(f, i) f##_##i
#define NAME_2(f, i) NAME_3(f, i)
#define NAME(f) NAME_2(f, ISA)

#define ISA base
#include "isa.h"
#undef ISA

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) \
    && !defined(SOFTXENT_BASELINE_ONLY)
#define SOFTXENT_X86_LEVELS 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define ISA v3
#include "isa.h"
#undef ISA
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4,prefer-vector-width=512")
#define ISA v4
#include "isa.h"
#undef ISA
#pragma GCC pop_options
#endif

typedef struct {
    const char *name;
    kernel_fn run[3]; /* by storage dtype: float16, float32, float64 */
    void (*exp_f32)(const float *, float *, ptrdiff_t, int);
    void (*exp_f64)(const double *, double *, ptrdiff_t, int);
    void (*half)(const void *, void *, ptrdiff_t, int);
    void (*loss_block[2])(const ew_job_t *); /* elementwise losses: float32, float64 */
    ptrdiff_t (*count_targets)(const int64_t *, ptrdiff_t, int64_t, int64_t, const void *, int,
                               ptrdiff_t *, double *);
    void (*fill_targets)(const int64_t *, ptrdiff_t, int64_t, int64_t *, unsigned char *,
                         const void *, void *, int);
} isa_t;

#define ISA_ENTRY(label, i)                                                                  \
    {                                                                                        \
        label, {NAME_2(run_f16, i), NAME_2(run_f32, i), NAME_2(run_f64, i)},                 \
            NAME_2(elementwise_f32, i), NAME_2(elementwise_f64, i), NAME_2(half_array, i),        \
            {NAME_2(loss_block_f32, i), NAME_2(loss_block_f64, i)},                          \
            NAME_2(count_targets, i), NAME_2(fill_targets, i)                                \
    }

static const isa_t isas[] = {
    ISA_ENTRY("baseline", base),
#ifdef SOFTXENT_X86_LEVELS
    ISA_ENTRY("x86-64-v3", v3),
    ISA_ENTRY("x86-64-v4", v4),
#endif
};
#define NUM_ISAS ((int)(sizeof(isas) / sizeof(isas[0])))

static int supported = 1; /* how many entries of isas this CPU runs */
static const isa_t *current = &isas[0];

static void detect(void)
{
#ifdef SOFTXENT_X86_LEVELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v3"))
        supported = 2;
    if (__builtin_cpu_supports("x86-64-v4"))
        supported = 3;
#endif
    current = &isas[supported - 1];
}

/* ---- buffers ------------------------------------------------------------------------ */

enum kind { K_F16, K_F32, K_F64, K_I64, K_BOOL, K_OTHER };

static int kind_of(const Py_buffer *b)
{
    const char *f = b->format ? b->format : "B";
    while (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (f[0] && f[1])
        return K_OTHER;
    switch (f[0]) {
    case 'e': return b->itemsize == 2 ? K_F16 : K_OTHER;
    case 'f': return b->itemsize == 4 ? K_F32 : K_OTHER;
    case 'd': return b->itemsize == 8 ? K_F64 : K_OTHER;
    case 'l': case 'q': return b->itemsize == 8 ? K_I64 : K_OTHER;
    case '?': return b->itemsize == 1 ? K_BOOL : K_OTHER;
    }
    return K_OTHER;
}

typedef struct {
    Py_buffer views[8];
    int count;
} held_t;

static void release(held_t *h)
{
    while (h->count > 0)
        PyBuffer_Release(&h->views[--h->count]);
}

/* Get obj's buffer (ndim dimensions); NULL with an exception set on failure. */
static Py_buffer *hold(held_t *h, PyObject *obj, int ndim, int writable, const char *what)
{
    Py_buffer *b = &h->views[h->count];
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, b, flags) < 0)
        return NULL;
    h->count++;
    if (b->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", what, ndim,
                     b->ndim);
        return NULL;
    }
    return b;
}

/* Element strides of b, or 0 when b's layout is not one the kernels take. */
static int element_strides(const Py_buffer *b, ptrdiff_t *rs, ptrdiff_t *cs)
{
    if ((uintptr_t)b->buf % (uintptr_t)b->itemsize)
        return 0;
    for (int d = 0; d < b->ndim; d++)
        if (b->strides[d] % b->itemsize)
            return 0;
    *rs = b->strides[0] / b->itemsize;
    if (cs)
        *cs = b->ndim > 1 ? b->strides[1] / b->itemsize : 0;
    return 1;
}

static int compute_kind(int k) { return k == K_F64 ? K_F64 : K_F32; }

/* An optional contiguous 1-d array of n entries of kind k; 1 when ok (or None). */
static int vector(held_t *h, PyObject *obj, Py_ssize_t n, int k, const char *what,
                  const void **ptr, int writable)
{
    *ptr = NULL;
    if (obj == Py_None)
        return 1;
    Py_buffer *b = hold(h, obj, 1, writable, what);
    if (!b)
        return 0;
    if (kind_of(b) != k || b->shape[0] != n) {
        static const char *const dtype_of[] = {"float16", "float32", "float64", "int64", "bool",
                                               "?"};
        PyErr_Format(PyExc_ValueError, "%s must be a 1-d array of %zd entries of dtype %s",
                     what, n, dtype_of[k]);
        return 0;
    }
    if (n > 1 && b->strides[0] != b->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must be contiguous", what);
        return 0;
    }
    *ptr = b->buf;
    return 1;
}

/* x (R, C) and, when given, a same-shaped, same-dtype array `other`. */
static int block(held_t *h, PyObject *obj, job_t *J, int *kind)
{
    Py_buffer *b = hold(h, obj, 2, 0, "x");
    if (!b)
        return -1;
    *kind = kind_of(b);
    if (*kind > K_F64) {
        PyErr_SetString(PyExc_TypeError, "x must be float16, float32 or float64");
        return -1;
    }
    J->rows = b->shape[0];
    J->classes = b->shape[1];
    J->x = b->buf;
    return element_strides(b, &J->x_rs, &J->x_cs);
}

static int same_block(held_t *h, PyObject *obj, const job_t *J, int kind, int writable,
                      const char *what, void **ptr, ptrdiff_t *rs, ptrdiff_t *cs)
{
    Py_buffer *b = hold(h, obj, 2, writable, what);
    if (!b)
        return -1;
    if (kind_of(b) != kind || b->shape[0] != J->rows || b->shape[1] != J->classes) {
        PyErr_Format(PyExc_ValueError, "%s must have the shape and dtype of x", what);
        return -1;
    }
    *ptr = b->buf;
    return element_strides(b, rs, cs);
}

/* Every helper below answers 1 (fine), 0 (a layout the kernels do not take: the caller
 * falls back to NumPy) or -1 (an error, exception set); `both` combines two answers. */
static int both(int a, int b) { return a < 0 || b < 0 ? -1 : a && b; }

/* An optional (R, C) output of x's shape and dtype (None: no output). */
static int optional_out(held_t *h, PyObject *obj, job_t *J, int kind, const char *what)
{
    if (obj == Py_None)
        return 1;
    return same_block(h, obj, J, kind, 1, what, &J->out, &J->o_rs, &J->o_cs);
}

/* Run the job when every part was fine, else release the buffers and say why not. */
static PyObject *finish(held_t *h, int status, const job_t *J, int kind)
{
    int rc = 0;
    if (status > 0 && J->rows > 0 && J->classes > 0) {
        kernel_fn fn = current->run[kind];
        Py_BEGIN_ALLOW_THREADS
        rc = fn(J);
        Py_END_ALLOW_THREADS
    }
    release(h);
    if (status < 0)
        return NULL;
    if (rc < 0)
        return PyErr_NoMemory();
    return PyBool_FromLong(status > 0);
}

/* ---- Python functions -------------------------------------------------------------- */

static PyObject *py_softmax(PyObject *self, PyObject *args)
{
    PyObject *x, *out;
    int log, kind = 0;
    if (!PyArg_ParseTuple(args, "OOp", &x, &out, &log))
        return NULL;
    held_t h = {.count = 0};
    job_t J = {.op = log ? OP_LOG_SOFTMAX : OP_SOFTMAX};
    int status = block(&h, x, &J, &kind);
    if (status >= 0)
        status = both(status, optional_out(&h, out, &J, kind, "out"));
    return finish(&h, status, &J, kind);
}

static PyObject *py_logsumexp(PyObject *self, PyObject *args)
{
    PyObject *x, *result;
    int kind = 0;
    if (!PyArg_ParseTuple(args, "OO", &x, &result))
        return NULL;
    held_t h = {.count = 0};
    job_t J = {.op = OP_LOGSUMEXP};
    int status = block(&h, x, &J, &kind);
    if (status >= 0 && !vector(&h, result, J.rows, compute_kind(kind), "result",
                               (const void **)&J.result, 1))
        status = -1;
    return finish(&h, status, &J, kind);
}

/* Upstream gradient: a float, or a (rows,) array of the compute dtype. */
static int upstream(held_t *h, PyObject *g, job_t *J, int ck)
{
    if (PyFloat_Check(g) || PyLong_Check(g)) {
        J->g_scalar = PyFloat_AsDouble(g);
        return !PyErr_Occurred();
    }
    return vector(h, g, J->rows, ck, "g", &J->g, 0);
}

static PyObject *py_ce_index(PyObject *self, PyObject *args)
{
    PyObject *x, *y, *wy, *valid, *g, *cw, *loss, *grad, *ignore;
    double smoothing, weight_sum;
    int kind = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOddOOO", &x, &y, &wy, &valid, &g, &cw, &smoothing,
                          &weight_sum, &loss, &grad, &ignore))
        return NULL;
    held_t h = {.count = 0};
    job_t J = {.op = OP_CE_INDEX, .smoothing = smoothing, .weight_sum = weight_sum};
    if (ignore != Py_None) { /* raw targets: ignored rows and weights found from y */
        if (wy != Py_None || valid != Py_None) {
            PyErr_SetString(PyExc_ValueError, "raw targets (ignore_index given) take no wy "
                                              "or valid");
            return NULL;
        }
        J.raw_targets = 1;
        J.ignore_index = (int64_t)PyLong_AsLongLong(ignore);
        if (PyErr_Occurred())
            return NULL;
    }
    int status = block(&h, x, &J, &kind), ck = compute_kind(kind);
    if (status >= 0 &&
        !(vector(&h, y, J.rows, K_I64, "y", (const void **)&J.y, 0) &&
          vector(&h, wy, J.rows, ck, "wy", &J.wy, 0) &&
          vector(&h, valid, J.rows, K_BOOL, "valid", (const void **)&J.valid, 0) &&
          upstream(&h, g, &J, ck) &&
          vector(&h, cw, J.classes, ck, "class_weight", &J.class_weight, 0) &&
          vector(&h, loss, J.rows, ck, "loss", (const void **)&J.result, 1)))
        status = -1;
    if (status >= 0)
        status = both(status, optional_out(&h, grad, &J, kind, "grad"));
    return finish(&h, status, &J, kind);
}

static PyObject *py_ce_prob(PyObject *self, PyObject *args)
{
    PyObject *x, *t, *g, *scale, *offset, *loss, *grad;
    int kind = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOO", &x, &t, &g, &scale, &offset, &loss, &grad))
        return NULL;
    held_t h = {.count = 0};
    job_t J = {.op = OP_CE_PROB};
    int status = block(&h, x, &J, &kind), ck = compute_kind(kind);
    if (status >= 0)
        status = both(status, same_block(&h, t, &J, kind, 0, "t", (void **)&J.t, &J.t_rs,
                                         &J.t_cs));
    if (status >= 0 &&
        !(upstream(&h, g, &J, ck) && vector(&h, scale, J.classes, ck, "scale", &J.scale, 0) &&
          vector(&h, offset, J.classes, ck, "offset", &J.offset, 0) &&
          vector(&h, loss, J.rows, ck, "loss", (const void **)&J.result, 1)))
        status = -1;
    if (status >= 0)
        status = both(status, optional_out(&h, grad, &J, kind, "grad"));
    return finish(&h, status, &J, kind);
}

/* class_targets(y, num_classes, ignore_index, class_weight, y_out, valid_out, wy_out)
 * -> (first_bad, ignored, weight_total): contiguous int64 class indices y (n,). first_bad
 * is the position of the first entry neither in [0, num_classes) nor ignore_index (-1:
 * none), ignored how many entries equal ignore_index, weight_total the sum of
 * class_weight[y] over the others (in double; 0.0 without class_weight, with an output
 * or with a bad entry). Each output may be None (not written): y_out (int64) gets y with
 * ignored entries as 0, valid_out (bool) whether an entry is not ignored, wy_out
 * (class_weight's dtype, float32 or float64, which is then given) class_weight[y], 0
 * where ignored. The outputs are written only when no entry is out of range. */
static PyObject *py_class_targets(PyObject *self, PyObject *args)
{
    PyObject *yo, *cwo, *yout_o, *valid_o, *wy_o;
    Py_ssize_t C;
    long long ignore_index;
    if (!PyArg_ParseTuple(args, "OnLOOOO", &yo, &C, &ignore_index, &cwo, &yout_o, &valid_o,
                          &wy_o))
        return NULL;
    held_t h = {.count = 0};
    Py_buffer *by = hold(&h, yo, 1, 0, "y");
    if (!by)
        goto error;
    const Py_ssize_t n = by->shape[0];
    if (kind_of(by) != K_I64 || (n > 1 && by->strides[0] != by->itemsize)) {
        PyErr_SetString(PyExc_ValueError, "y must be a contiguous int64 array");
        goto error;
    }
    const int64_t *y = (const int64_t *)by->buf;
    int64_t *y_out = NULL;
    unsigned char *valid_out = NULL;
    const void *cw = NULL;
    void *wy = NULL;
    int wk = K_F32;
    if (cwo != Py_None) {
        Py_buffer *bw = hold(&h, cwo, 1, 0, "class_weight");
        if (!bw)
            goto error;
        wk = kind_of(bw);
        if ((wk != K_F32 && wk != K_F64) || bw->shape[0] != C ||
            (C > 1 && bw->strides[0] != bw->itemsize)) {
            PyErr_SetString(PyExc_ValueError, "class_weight must be a contiguous float32 or "
                                              "float64 array of num_classes entries");
            goto error;
        }
        cw = bw->buf;
    }
    if (!(vector(&h, yout_o, n, K_I64, "y_out", (const void **)&y_out, 1) &&
          vector(&h, valid_o, n, K_BOOL, "valid_out", (const void **)&valid_out, 1) &&
          vector(&h, wy_o, n, wk, "wy_out", (const void **)&wy, 1)))
        goto error;
    if (wy && !cw) {
        PyErr_SetString(PyExc_ValueError, "wy_out needs class_weight");
        goto error;
    }
    Py_ssize_t first_bad, ignored;
    double weight_total;
    Py_BEGIN_ALLOW_THREADS
    const int fill = y_out || valid_out || wy; /* a part, whose weight total is not asked */
    ignored = current->count_targets(y, n, (int64_t)C, (int64_t)ignore_index, fill ? NULL : cw,
                                     wk == K_F64, &first_bad, &weight_total);
    if (first_bad < 0 && fill)
        current->fill_targets(y, n, (int64_t)ignore_index, y_out, valid_out, cw, wy,
                              wk == K_F64);
    Py_END_ALLOW_THREADS
    release(&h);
    if (isnan(weight_total)) /* class weights are finite: its scratch was not allocated */
        return PyErr_NoMemory();
    return Py_BuildValue("nnd", first_bad, ignored, weight_total);
error:
    release(&h);
    return NULL;
}

/* One operand of an elementwise loss block: None (absent) or an (R, C) array of the
 * compute kind k with a column stride of 1. 1 fine, 0 not taken, -1 error. */
static int ew_operand(held_t *h, PyObject *obj, const ew_job_t *J, int k, int writable,
                      const char *what, int *present, const void **ptr, ptrdiff_t *rs)
{
    *present = 0;
    if (obj == Py_None)
        return 1;
    Py_buffer *b = hold(h, obj, 2, writable, what);
    if (!b)
        return -1;
    if (b->shape[0] != J->rows || b->shape[1] != J->cols) {
        PyErr_Format(PyExc_ValueError, "%s must have the shape of x", what);
        return -1;
    }
    ptrdiff_t cs = 1;
    *present = 1;
    *ptr = b->buf;
    return kind_of(b) == k && element_strides(b, rs, &cs) && (cs == 1 || J->cols == 1);
}

/* elementwise_loss(loss, x, t, w, p, g, loss_out, grad): loss and gradient of one block
 * (elementwise.h); w, p, grad may be None, g a float or an array. False (nothing done)
 * unless every array is float32 (or every one float64) with a column stride of 1. */
static PyObject *py_elementwise_loss(PyObject *self, PyObject *args)
{
    PyObject *x, *t, *w, *p, *g, *loss, *grad;
    int which;
    if (!PyArg_ParseTuple(args, "iOOOOOOO", &which, &x, &t, &w, &p, &g, &loss, &grad))
        return NULL;
    if (which < EW_MSE || which > EW_KL_LOG) {
        PyErr_Format(PyExc_ValueError, "unknown elementwise loss %d", which);
        return NULL;
    }
    held_t h = {.count = 0};
    ew_job_t J = {.loss = which};
    Py_buffer *bx = hold(&h, x, 2, 0, "x");
    if (!bx) {
        release(&h);
        return NULL;
    }
    int k = kind_of(bx), present = 0, status = k == K_F32 || k == K_F64;
    J.rows = bx->shape[0];
    J.cols = bx->shape[1];
    ptrdiff_t cs = 1;
    J.x = bx->buf;
    status = status && element_strides(bx, &J.x_rs, &cs) && (cs == 1 || J.cols == 1);
    if (PyFloat_Check(g) || PyLong_Check(g)) {
        J.g_scalar = PyFloat_AsDouble(g);
        if (PyErr_Occurred())
            status = -1;
        g = Py_None;
    }
    struct {
        PyObject *obj;
        const char *what;
        int writable, *present;
        const void **ptr;
        ptrdiff_t *rs;
    } parts[] = {
        {t, "t", 0, &present, &J.t, &J.t_rs},
        {w, "w", 0, &J.hw, &J.w, &J.w_rs},
        {p, "p", 0, &J.hp, &J.p, &J.p_rs},
        {g, "g", 0, &J.hg, &J.g, &J.g_rs},
        {loss, "loss", 1, &present, (const void **)&J.loss_out, &J.loss_rs},
        {grad, "grad", 1, &J.dg, (const void **)&J.grad, &J.grad_rs},
    };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && status >= 0; i++)
        status = both(status, ew_operand(&h, parts[i].obj, &J, k, parts[i].writable,
                                         parts[i].what, parts[i].present, parts[i].ptr,
                                         parts[i].rs));
    if (status > 0 && (!J.t || !J.loss_out)) {
        PyErr_SetString(PyExc_ValueError, "t and loss_out are required");
        status = -1;
    }
    if (status > 0 && J.rows > 0 && J.cols > 0) {
        ptrdiff_t c = J.cols;
        J.flat = J.x_rs == c && J.t_rs == c && J.loss_rs == c && (!J.hw || J.w_rs == c) &&
                 (!J.hp || J.p_rs == c) && (!J.hg || J.g_rs == c) &&
                 (!J.dg || J.grad_rs == c);
        void (*fn)(const ew_job_t *) = current->loss_block[k == K_F64];
        Py_BEGIN_ALLOW_THREADS
        fn(&J);
        Py_END_ALLOW_THREADS
    }
    release(&h);
    if (status < 0)
        return NULL;
    return PyBool_FromLong(status > 0);
}

/* elementwise(x, y, func): func 0 exp, 1 log, 4 exp of arguments <= 0, 5 the wide rows'
 * exp of arguments <= 0, 6 log of [1, 2], 7 exp(-|x|) of the binary cross-entropy
 * (float32/float64),
 * 2 float32 -> float16 bits, 3 float16 -> float32; contiguous 1-d arrays. The tests of
 * the element functions, and the elementwise losses' float16 blocks (convert_block). */
static PyObject *py_elementwise(PyObject *self, PyObject *args)
{
    PyObject *x, *y;
    int func;
    if (!PyArg_ParseTuple(args, "OOi", &x, &y, &func))
        return NULL;
    held_t h = {.count = 0};
    Py_buffer *bx = hold(&h, x, 1, 0, "x"), *by = bx ? hold(&h, y, 1, 1, "y") : NULL;
    if (!by)
        goto error;
    int kx = kind_of(bx), ky = kind_of(by);
    ptrdiff_t n = bx->shape[0];
    if (by->shape[0] != n || (n > 1 && (bx->strides[0] != bx->itemsize ||
                                        by->strides[0] != by->itemsize))) {
        PyErr_SetString(PyExc_ValueError, "x and y must be contiguous and of one length");
        goto error;
    }
    int math = func == 0 || func == 1 || (func >= 4 && func <= 7);
    int exp32 = math && kx == K_F32 && ky == K_F32;
    int exp64 = math && kx == K_F64 && ky == K_F64;
    int store = func == 2 && kx == K_F32 && by->itemsize == 2;
    int load = func == 3 && bx->itemsize == 2 && ky == K_F32;
    if (!(exp32 || exp64 || store || load)) {
        PyErr_SetString(PyExc_TypeError, "unsupported dtypes for this function");
        goto error;
    }
    /* The float16 conversions also serve the elementwise losses' worker threads. */
    Py_BEGIN_ALLOW_THREADS
    if (exp32)
        current->exp_f32(bx->buf, by->buf, n, func);
    else if (exp64)
        current->exp_f64(bx->buf, by->buf, n, func);
    else
        current->half(bx->buf, by->buf, n, store);
    Py_END_ALLOW_THREADS
    release(&h);
    Py_RETURN_NONE;
error:
    release(&h);
    return NULL;
}

static PyObject *py_isa(PyObject *self, PyObject *noargs)
{
    return PyUnicode_FromString(current->name);
}

static PyObject *py_isas(PyObject *self, PyObject *noargs)
{
    PyObject *names = PyTuple_New(supported);
    if (!names)
        return NULL;
    for (int i = 0; i < supported; i++) {
        PyObject *s = PyUnicode_FromString(isas[i].name);
        if (!s) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    return names;
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    for (int i = 0; i < supported; i++) {
        if (strcmp(isas[i].name, name) == 0) {
            current = &isas[i];
            Py_RETURN_NONE;
        }
    }
    PyErr_Format(PyExc_ValueError, "instruction set %R is not one this CPU runs", arg);
    return NULL;
}

static PyMethodDef methods[] = {
    {"softmax", py_softmax, METH_VARARGS,
     "softmax(x, out, log) -> bool: softmax (log_softmax if log) of each row of x."},
    {"logsumexp", py_logsumexp, METH_VARARGS,
     "logsumexp(x, result) -> bool: log sum exp of each row of x into result."},
    {"ce_index", py_ce_index, METH_VARARGS,
     "ce_index(x, y, wy, valid, g, class_weight, smoothing, weight_sum, loss, grad, "
     "ignore_index) -> bool"},
    {"ce_prob", py_ce_prob, METH_VARARGS,
     "ce_prob(x, t, g, scale, offset, loss, grad) -> bool"},
    {"class_targets", py_class_targets, METH_VARARGS,
     "class_targets(y, num_classes, ignore_index, class_weight, y_out, valid_out, wy_out) -> "
     "(first_bad, ignored, weight_total): checks and fills a cross-entropy's class-index "
     "targets."},
    {"elementwise_loss", py_elementwise_loss, METH_VARARGS,
     "elementwise_loss(loss, x, t, w, p, g, loss_out, grad) -> bool: an elementwise loss "
     "block (0 mse, 1 bce with logits, 2 bce, 3 kl_div, 4 kl_div with log targets)."},
    {"elementwise", py_elementwise, METH_VARARGS,
     "elementwise(x, y, func): the kernels' exp (0), log (1), float16 store (2) and load (3), "
     "exp of arguments <= 0 (4), the wide rows' exp of arguments <= 0 (5), log of [1, 2] (6), "
     "exp(-|x|) of the binary cross-entropy (7)."},
    {"buffer", py_buffer, METH_O,
     "buffer(nbytes) -> Buffer: a writable block, kept for a later call when freed."},
    {"set_buffer_cache", py_set_buffer_cache, METH_O,
     "set_buffer_cache(limit) -> (bytes, blocks): what freed Buffers keep (before the call); "
     "keep at most limit bytes from now on (limit < 0: unchanged)."},
    {"isa", py_isa, METH_NOARGS, "isa() -> str: the instruction set the kernels run."},
    {"isas", py_isas, METH_NOARGS, "isas() -> tuple: the instruction sets this CPU runs."},
    {"set_isa", py_set_isa, METH_O, "set_isa(name): run the kernels built for `name`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_core", "softxent's native row kernels.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    detect();
    if (PyType_Ready(&BufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "BUFFER_MIN_BYTES", (long)BUFFER_MIN_BYTES) < 0)
        Py_CLEAR(m);
    return m;
}
