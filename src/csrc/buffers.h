/* Output buffers kept for the next call: softxent._core.Buffer and its cache, included by
 * core.c.
 *
 * Why: a large output (a gradient, a softmax) freshly allocated is a fresh mapping from
 * the OS, which zeroes every page on first touch: at 4096 x 32000 float32 the zeroing and
 * the page faults cost about as much as the kernel's whole pass (softmax 0.55-0.6 ns per
 * logit with a fresh output, 0.27-0.33 with one written before; 2 threads). A training
 * loop frees the last step's gradient just before it asks for the next one of the same
 * size, so the memory of a freed output is kept and handed out again.
 *
 * A Buffer is a writable block exporting the buffer protocol; softxent wraps it in an
 * ndarray (numpy.frombuffer), whose last view dying frees the Buffer, which returns its
 * block here. The cache keeps at most BUFFER_SLOTS blocks of at least BUFFER_MIN_BYTES
 * each, cache_limit bytes in all (the oldest go first), and hands a block out again only
 * for a request of exactly its size. Kept blocks stay resident: marking their pages
 * MADV_FREE (for the OS to take back under memory pressure) measured as slow as fresh
 * pages (softmax 0.47-0.49 ns per logit, against 0.31-0.33 without it). Blocks are
 * tracked by tracemalloc while a Buffer holds them (domain BUFFER_TRACE_DOMAIN), as
 * NumPy's own arrays are. The GIL guards the cache: a Buffer is made and freed only with
 * it held. The module exports BUFFER_MIN_BYTES, below which softxent asks for no Buffer. */

#define BUFFER_SLOTS 2
#define BUFFER_MIN_BYTES ((size_t)1 << 22)
#define BUFFER_TRACE_DOMAIN 0x736f6678u /* "sofx" */

static struct {
    void *data;
    size_t size;
} buffer_cache[BUFFER_SLOTS];
static int buffer_cached;           /* slots in use, oldest first */
static size_t buffer_cached_bytes;  /* their sizes' sum */
static size_t cache_limit;          /* set_buffer_cache(); 0: keep nothing */

typedef struct {
    PyObject_HEAD void *data;
    size_t size;
} BufferObject;

/* Drop the oldest kept block. */
static void buffer_evict(void)
{
    aligned_free(buffer_cache[0].data);
    buffer_cached_bytes -= buffer_cache[0].size;
    buffer_cached--;
    memmove(buffer_cache, buffer_cache + 1, (size_t)buffer_cached * sizeof(buffer_cache[0]));
}

/* Keep block (data, size) for a later request of the same size, or free it. */
static void buffer_keep(void *data, size_t size)
{
    if (size < BUFFER_MIN_BYTES || size > cache_limit) {
        aligned_free(data);
        return;
    }
    while (buffer_cached == BUFFER_SLOTS || buffer_cached_bytes + size > cache_limit)
        buffer_evict();
    buffer_cache[buffer_cached].data = data;
    buffer_cache[buffer_cached].size = size;
    buffer_cached++;
    buffer_cached_bytes += size;
}

/* A block of size bytes (64-byte aligned): a kept one of that size, else a new one (the
 * kept blocks freed first when memory runs short). */
static void *buffer_take(size_t size)
{
    for (int i = buffer_cached - 1; i >= 0; i--) {
        if (buffer_cache[i].size != size)
            continue;
        void *data = buffer_cache[i].data;
        buffer_cached_bytes -= size;
        buffer_cached--;
        memmove(buffer_cache + i, buffer_cache + i + 1,
                (size_t)(buffer_cached - i) * sizeof(buffer_cache[0]));
        return data;
    }
    void *data = aligned_alloc(64, (size + 63) / 64 * 64);
    if (!data && buffer_cached) {
        while (buffer_cached)
            buffer_evict();
        data = aligned_alloc(64, (size + 63) / 64 * 64);
    }
    return data;
}

static int buffer_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    BufferObject *b = (BufferObject *)self;
    return PyBuffer_FillInfo(view, self, b->data, (Py_ssize_t)b->size, 0, flags);
}

static void buffer_dealloc(PyObject *self)
{
    BufferObject *b = (BufferObject *)self;
    PyTraceMalloc_Untrack(BUFFER_TRACE_DOMAIN, (uintptr_t)b->data);
    buffer_keep(b->data, b->size);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs buffer_as_buffer = {buffer_getbuffer, NULL};

static PyTypeObject BufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "softxent._core.Buffer",
    .tp_basicsize = sizeof(BufferObject),
    .tp_dealloc = buffer_dealloc,
    .tp_as_buffer = &buffer_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A writable block of memory, kept for a later Buffer of its size when freed.",
};

/* buffer(nbytes) -> Buffer */
static PyObject *py_buffer(PyObject *self, PyObject *arg)
{
    (void)self;
    const Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "buffer size must be >= 0");
        return NULL;
    }
    BufferObject *b = PyObject_New(BufferObject, &BufferType);
    if (!b)
        return NULL;
    b->size = (size_t)n;
    b->data = buffer_take(b->size ? b->size : 1);
    if (!b->data) {
        b->size = 0;
        Py_DECREF(b); /* frees NULL */
        return PyErr_NoMemory();
    }
    (void)PyTraceMalloc_Track(BUFFER_TRACE_DOMAIN, (uintptr_t)b->data, b->size);
    return (PyObject *)b;
}

/* set_buffer_cache(limit) -> (kept bytes, kept blocks) before; limit < 0 only reports. */
static PyObject *py_set_buffer_cache(PyObject *self, PyObject *arg)
{
    (void)self;
    const long long limit = PyLong_AsLongLong(arg);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    PyObject *before = Py_BuildValue("(ni)", (Py_ssize_t)buffer_cached_bytes, buffer_cached);
    if (limit >= 0) {
        cache_limit = (size_t)limit;
        while (buffer_cached && buffer_cached_bytes > cache_limit)
            buffer_evict();
    }
    return before;
}
