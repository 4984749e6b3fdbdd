/*
 * net_core._pcstruct_c: postcard record packing in one C call.
 *
 * The accelerated twin of net_core/cortex/_pcstruct.py. That module is the
 * specification: every value, every exception type and every error message
 * produced here must be the same as the pure-Python functions py_unpack_from()
 * and py_pack() produce for the same arguments (tests/cortex/test_pcstruct.py
 * checks it with hypothesis). Change both together or neither.
 *
 * Theory of operation
 * -------------------
 * unpack_from(fmt, buf, pos=0) walks the format string once, decoding one
 * postcard value per code from a read-only view of buf, and returns a tuple of
 * the values followed by the end offset. Malformed input raises the class given
 * to set_error_class() (PostcardError) and nothing else; the view is never read
 * past its end (every length is checked against the bytes left before use).
 *
 * pack(fmt, *values) validates and encodes the values in order into a growable
 * buffer (on the stack for ordinary records) and returns it as bytes; values
 * that do not fit raise ValueError, values of the wrong type TypeError.
 *
 * No Python code runs while a borrowed pointer into a buffer or a sequence is
 * in use, so neither can change under our feet.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define U64_MAX UINT64_MAX
#define U32_MAX UINT64_C(0xFFFFFFFF)
#define U64_WIDTH 10 /* ceil(64 / 7) */
#define U32_WIDTH 5  /* ceil(32 / 7) */

/* ------------------------------------------------------------------------ */
/* Module state                                                              */

typedef struct {
    PyObject *error_class; /* PostcardError, given once by set_error_class() */
} module_state;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* Raise TypeError(format % type(value).__name__); format holds one %U. */
static int
raise_type_error(const char *format, PyObject *value)
{
    PyObject *name = PyType_GetName(Py_TYPE(value));
    if (name == NULL) {
        return -1;
    }
    PyErr_Format(PyExc_TypeError, format, name);
    Py_DECREF(name);
    return -1;
}

/*
 * Fill view with a C-contiguous, read-only byte view of obj. A non-contiguous
 * exporter is copied first, as memoryview(obj).tobytes() does in the twin. An
 * object without the buffer protocol raises TypeError(format % type name).
 */
static int
get_byte_view(PyObject *obj, Py_buffer *view, const char *format)
{
    if (!PyObject_CheckBuffer(obj)) {
        return raise_type_error(format, obj);
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) == 0) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_BufferError)) {
        return -1;
    }
    /* Not C-contiguous (as CPython judges it; an empty strided view counts):
     * copy it into a new bytes object in C order and view that instead. */
    PyErr_Clear();
    Py_buffer full;
    if (PyObject_GetBuffer(obj, &full, PyBUF_FULL_RO) < 0) {
        return -1;
    }
    PyObject *copy = PyBytes_FromStringAndSize(NULL, full.len);
    if (copy != NULL && PyBuffer_ToContiguous(PyBytes_AS_STRING(copy), &full, full.len, 'C') < 0) {
        Py_CLEAR(copy);
    }
    PyBuffer_Release(&full);
    if (copy == NULL) {
        return -1;
    }
    /* On success the view holds its own reference to the copy. */
    int rc = PyObject_GetBuffer(copy, view, PyBUF_SIMPLE);
    Py_DECREF(copy);
    return rc;
}

/*
 * Records hold ints, strs, tuples of str and enum singletons: they can never be part
 * of a reference cycle, so there is nothing for the cycle collector to find in them.
 * Left tracked, every one of them is scanned by each full collection, which doubled
 * the cost of folding a large state. A record is untracked only when none of its
 * items is itself tracked (except the given singletons, which never refer back).
 */
static void
untrack_if_atomic(PyObject *record, PyObject *singleton_a, PyObject *singleton_b)
{
    const Py_ssize_t n = PyTuple_GET_SIZE(record);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(record, i);
        if (item == NULL || item == singleton_a || item == singleton_b) {
            continue;
        }
        if (PyObject_IS_GC(item) && PyObject_GC_IsTracked(item)) {
            return;
        }
    }
    if (PyObject_GC_IsTracked(record)) {
        PyObject_GC_UnTrack(record);
    }
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

typedef struct {
    const unsigned char *data;
    Py_ssize_t len;
    PyObject *error; /* borrowed: the PostcardError class */
} reader;

/* The 10th byte of a u64 varint carried more than bit 63: report the value. */
static int
u64_overflow(const reader *r, const char *what, uint64_t low, unsigned int top,
             Py_ssize_t start)
{
    PyObject *value = NULL, *high = NULL, *shifted = NULL, *low_obj = NULL;
    PyObject *shift = PyLong_FromLong(63);
    if (shift == NULL) {
        goto done;
    }
    high = PyLong_FromUnsignedLong(top);
    if (high == NULL) {
        goto done;
    }
    shifted = PyNumber_Lshift(high, shift);
    if (shifted == NULL) {
        goto done;
    }
    low_obj = PyLong_FromUnsignedLongLong(low);
    if (low_obj == NULL) {
        goto done;
    }
    value = PyNumber_Or(shifted, low_obj);
    if (value == NULL) {
        goto done;
    }
    PyErr_Format(r->error, "%s: varint %S overflows at offset %zd", what, value, start);
done:
    Py_XDECREF(value);
    Py_XDECREF(low_obj);
    Py_XDECREF(shifted);
    Py_XDECREF(high);
    Py_XDECREF(shift);
    return -1;
}

/*
 * Read an unsigned LEB128 varint of at most width bytes whose value must not
 * exceed maximum; advance *pos past it. Non-canonical encodings (redundant
 * 0x80 groups) are accepted within the width, as postcard does.
 */
static inline int
read_varint(const reader *r, Py_ssize_t *pos, int width, uint64_t maximum, const char *what,
            uint64_t *out)
{
    const Py_ssize_t start = *pos;
    Py_ssize_t p = start;
    uint64_t value = 0;
    if (p < r->len && r->data[p] < 0x80) { /* the common one-byte case */
        *out = r->data[p];
        *pos = p + 1;
        return 0;
    }
    for (int i = 0; i < width; i++) {
        if (p >= r->len) {
            PyErr_Format(r->error, "%s: truncated varint at offset %zd", what, start);
            return -1;
        }
        unsigned int byte = r->data[p++];
        unsigned int group = byte & 0x7F;
        if (i == U64_WIDTH - 1 && group > 1) {
            /* Bits past 63 cannot be held in 64 bits: an overflow when this is
             * the last byte, an over-long varint when another one follows. */
            if (byte & 0x80) {
                break;
            }
            return u64_overflow(r, what, value, group, start);
        }
        value |= (uint64_t)group << (7 * i);
        if (!(byte & 0x80)) {
            if (value > maximum) {
                PyErr_Format(r->error, "%s: varint %llu overflows at offset %zd", what,
                             (unsigned long long)value, start);
                return -1;
            }
            *out = value;
            *pos = p;
            return 0;
        }
    }
    PyErr_Format(r->error, "%s: varint longer than %d bytes at offset %zd", what, width, start);
    return -1;
}

/* Read a varint length and that many bytes; *span points into the buffer. */
static int
read_span(const reader *r, Py_ssize_t *pos, const char *what, const unsigned char **span,
          Py_ssize_t *size)
{
    Py_ssize_t p = *pos;
    uint64_t length = 0;
    if (read_varint(r, &p, U64_WIDTH, U64_MAX, what, &length) < 0) {
        return -1;
    }
    Py_ssize_t left = r->len - p; /* >= 0: the varint ended inside the buffer */
    if (length > (uint64_t)left) {
        PyErr_Format(r->error, "%s: need %llu byte(s) at offset %zd, have %zd", what,
                     (unsigned long long)length, p, left);
        return -1;
    }
    *span = r->data + p;
    *size = (Py_ssize_t)length;
    *pos = p + (Py_ssize_t)length;
    return 0;
}

static PyObject *
read_str(const reader *r, Py_ssize_t *pos)
{
    const Py_ssize_t start = *pos;
    const unsigned char *span;
    Py_ssize_t size;
    if (read_span(r, pos, "str", &span, &size) < 0) {
        return NULL;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)span, size, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        PyErr_Format(r->error, "str: invalid UTF-8 at offset %zd", start);
    }
    return text;
}

static PyObject *
read_bytes(const reader *r, Py_ssize_t *pos)
{
    const unsigned char *span;
    Py_ssize_t size;
    if (read_span(r, pos, "bytes", &span, &size) < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)span, size);
}

/* Vec<String> as a tuple of str. */
static PyObject *
read_str_seq(const reader *r, Py_ssize_t *pos)
{
    const Py_ssize_t start = *pos;
    uint64_t count = 0;
    if (read_varint(r, pos, U64_WIDTH, U64_MAX, "length", &count) < 0) {
        return NULL;
    }
    /* Every string takes at least one byte: a larger count is certainly
     * truncated and must not size an allocation. */
    if (count > (uint64_t)(r->len - *pos)) {
        PyErr_Format(r->error, "seq: count %llu exceeds the bytes left at %zd",
                     (unsigned long long)count, start);
        return NULL;
    }
    PyObject *items = PyTuple_New((Py_ssize_t)count);
    if (items == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < (Py_ssize_t)count; k++) {
        PyObject *text = read_str(r, pos);
        if (text == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyTuple_SET_ITEM(items, k, text);
    }
    untrack_if_atomic(items, NULL, NULL); /* strs only: what the collector would do */
    return items;
}

static PyObject *
read_bool(const reader *r, Py_ssize_t *pos)
{
    const Py_ssize_t p = *pos;
    if (p >= r->len) {
        PyErr_Format(r->error, "bool: truncated at offset %zd", p);
        return NULL;
    }
    unsigned int byte = r->data[p];
    if (byte > 1) {
        PyErr_Format(r->error, "bool: invalid byte 0x%02x at offset %zd", byte, p);
        return NULL;
    }
    *pos = p + 1;
    return Py_NewRef(byte ? Py_True : Py_False);
}

static PyObject *
read_varint_obj(const reader *r, Py_ssize_t *pos, int width, uint64_t maximum, const char *what)
{
    uint64_t value = 0;
    if (read_varint(r, pos, width, maximum, what, &value) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(value);
}

static PyObject *
unknown_code(Py_UCS4 code)
{
    PyObject *text = PyUnicode_FromOrdinal((int)code);
    if (text != NULL) {
        PyErr_Format(PyExc_ValueError, "unknown postcard format code %R", text);
        Py_DECREF(text);
    }
    return NULL;
}

static PyObject *
decode_record(const reader *r, PyObject *fmt, Py_ssize_t pos)
{
    const Py_ssize_t n = PyUnicode_GET_LENGTH(fmt);
    const int kind = PyUnicode_KIND(fmt);
    const void *codes = PyUnicode_DATA(fmt);
    /* A tuple with unset (NULL) slots is safe to release on an error path. */
    PyObject *result = PyTuple_New(n + 1);
    if (result == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_UCS4 code = PyUnicode_READ(kind, codes, i);
        PyObject *item;
        switch (code) {
        case 'u':
            item = read_varint_obj(r, &pos, U64_WIDTH, U64_MAX, "u64");
            break;
        case 's':
            item = read_str(r, &pos);
            break;
        case 'S':
            item = read_str_seq(r, &pos);
            break;
        case 'w':
            item = read_varint_obj(r, &pos, U32_WIDTH, U32_MAX, "u32");
            break;
        case '?':
            item = read_bool(r, &pos);
            break;
        case 'y':
            item = read_bytes(r, &pos);
            break;
        default:
            item = unknown_code(code);
            break;
        }
        if (item == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, item);
    }
    PyObject *end = PyLong_FromSsize_t(pos);
    if (end == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, n, end);
    return result;
}

/* pos must be an index (operator.index) in 0..=len. */
static int
parse_pos(PyObject *obj, Py_ssize_t len, PyObject *error, Py_ssize_t *out)
{
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    /* Clamped, not raised, for ints beyond Py_ssize_t: they fail the checks. */
    Py_ssize_t pos = PyNumber_AsSsize_t(index, NULL);
    int rc = 0;
    if (pos == -1 && PyErr_Occurred()) {
        rc = -1;
    }
    else if (pos < 0) {
        PyErr_Format(PyExc_ValueError, "offset %S is negative", index);
        rc = -1;
    }
    else if (pos > len) {
        PyErr_Format(error, "offset %S is beyond the end of the %zd-byte buffer", index, len);
        rc = -1;
    }
    Py_DECREF(index);
    *out = pos;
    return rc;
}

static int
bind_keyword(PyObject *name, PyObject *value, PyObject **fmt, PyObject **buf, PyObject **pos)
{
    PyObject **slot;
    if (PyUnicode_CompareWithASCIIString(name, "fmt") == 0) {
        slot = fmt;
    }
    else if (PyUnicode_CompareWithASCIIString(name, "buf") == 0) {
        slot = buf;
    }
    else if (PyUnicode_CompareWithASCIIString(name, "pos") == 0) {
        slot = pos;
    }
    else {
        PyErr_Format(PyExc_TypeError, "unpack_from() got an unexpected keyword argument %R",
                     name);
        return -1;
    }
    if (*slot != NULL) {
        PyErr_Format(PyExc_TypeError, "unpack_from() got multiple values for argument %R", name);
        return -1;
    }
    *slot = value;
    return 0;
}

PyDoc_STRVAR(unpack_from_doc,
             "unpack_from(fmt, buf, pos=0)\n--\n\n"
             "Decode one postcard value per format code from buf at pos.\n\n"
             "Returns the values followed by the offset after the last one. Malformed\n"
             "input raises the class given to set_error_class() and nothing else.");

static PyObject *
unpack_from(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *fmt = NULL, *buf = NULL, *pos_obj = NULL;
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "unpack_from() takes at most 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (nargs > 0) {
        fmt = args[0];
    }
    if (nargs > 1) {
        buf = args[1];
    }
    if (nargs > 2) {
        pos_obj = args[2];
    }
    if (kwnames != NULL) {
        const Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            if (bind_keyword(PyTuple_GET_ITEM(kwnames, k), args[nargs + k], &fmt, &buf,
                             &pos_obj) < 0) {
                return NULL;
            }
        }
    }
    if (fmt == NULL || buf == NULL) {
        PyErr_SetString(PyExc_TypeError, "unpack_from() needs fmt and buf");
        return NULL;
    }
    PyObject *error = get_state(module)->error_class;
    if (error == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "net_core._pcstruct_c: set_error_class() has not been called");
        return NULL;
    }
    if (!PyUnicode_Check(fmt)) {
        raise_type_error("unpack_from format must be a str, got %U", fmt);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(fmt) < 0) {
        return NULL;
    }
#endif
    reader r;
    Py_buffer view;
    int have_view = 0;
    if (PyBytes_Check(buf)) {
        r.data = (const unsigned char *)PyBytes_AS_STRING(buf);
        r.len = PyBytes_GET_SIZE(buf);
    }
    else {
        if (get_byte_view(buf, &view, "unpack_from needs a bytes-like buffer, got %U") < 0) {
            return NULL;
        }
        have_view = 1;
        r.data = (const unsigned char *)view.buf;
        r.len = view.len;
    }
    r.error = error;
    PyObject *result = NULL;
    Py_ssize_t pos = 0;
    if (pos_obj == NULL || parse_pos(pos_obj, r.len, error, &pos) == 0) {
        result = decode_record(&r, fmt, pos);
    }
    if (have_view) {
        PyBuffer_Release(&view);
    }
    return result;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

#define WRITER_INLINE 256

typedef struct {
    unsigned char *data; /* inline, or PyMem-allocated once it outgrows it */
    Py_ssize_t len;
    Py_ssize_t cap;
    unsigned char inline_buf[WRITER_INLINE];
} writer;

static void
writer_init(writer *w)
{
    w->data = w->inline_buf;
    w->len = 0;
    w->cap = WRITER_INLINE;
}

static void
writer_release(writer *w)
{
    if (w->data != w->inline_buf) {
        PyMem_Free(w->data);
    }
}

static int
writer_reserve(writer *w, Py_ssize_t extra)
{
    if (extra <= w->cap - w->len) {
        return 0;
    }
    if (extra > PY_SSIZE_T_MAX - w->len) {
        PyErr_NoMemory();
        return -1;
    }
    const Py_ssize_t need = w->len + extra;
    Py_ssize_t cap = w->cap;
    while (cap < need) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    unsigned char *grown;
    if (w->data == w->inline_buf) {
        grown = PyMem_Malloc((size_t)cap);
        if (grown != NULL) {
            memcpy(grown, w->inline_buf, (size_t)w->len);
        }
    }
    else {
        grown = PyMem_Realloc(w->data, (size_t)cap);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->data = grown;
    w->cap = cap;
    return 0;
}

static int
write_varint(writer *w, uint64_t value)
{
    if (writer_reserve(w, U64_WIDTH) < 0) {
        return -1;
    }
    unsigned char *out = w->data + w->len;
    while (value >= 0x80) {
        *out++ = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out++ = (unsigned char)value;
    w->len = out - w->data;
    return 0;
}

static int
write_span(writer *w, const void *data, Py_ssize_t size)
{
    if (write_varint(w, (uint64_t)size) < 0 || writer_reserve(w, size) < 0) {
        return -1;
    }
    if (size > 0) {
        memcpy(w->data + w->len, data, (size_t)size);
        w->len += size;
    }
    return 0;
}

static int
pack_varint(writer *w, PyObject *value, uint64_t maximum)
{
    if (!PyLong_Check(value)) {
        return raise_type_error("varint needs an int, got %U", value);
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        /* Negative or wider than 64 bits. */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
    }
    else if (v <= maximum) {
        return write_varint(w, v);
    }
    PyErr_Format(PyExc_ValueError, "varint value %S out of range 0..=%llu", value,
                 (unsigned long long)maximum);
    return -1;
}

/* A String: varint length and UTF-8 bytes; format names the field for TypeError. */
static int
pack_str(writer *w, PyObject *value, const char *format)
{
    if (!PyUnicode_Check(value)) {
        return raise_type_error(format, value);
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &size); /* UnicodeEncodeError */
    if (utf8 == NULL) {
        return -1;
    }
    return write_span(w, utf8, size);
}

static int
pack_str_seq(writer *w, PyObject *value)
{
    if (PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Vec<String> needs a sequence of str, not a str");
        return -1;
    }
    PyObject *items;
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        items = Py_NewRef(value);
    }
    else {
        PyObject *iterator = PyObject_GetIter(value);
        if (iterator == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                raise_type_error("Vec<String> needs a sequence of str, got %U", value);
            }
            return -1;
        }
        items = PySequence_List(iterator);
        Py_DECREF(iterator);
        if (items == NULL) {
            return -1;
        }
    }
    /* pack_str runs no Python code, so the list cannot change while we walk it. */
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject **item = PySequence_Fast_ITEMS(items);
    int rc = write_varint(w, (uint64_t)n);
    for (Py_ssize_t k = 0; rc == 0 && k < n; k++) {
        rc = pack_str(w, item[k], "Vec<String> item needs a str, got %U");
    }
    Py_DECREF(items);
    return rc;
}

static int
pack_bool(writer *w, PyObject *value)
{
    if (!PyBool_Check(value)) {
        return raise_type_error("bool field needs a bool, got %U", value);
    }
    if (writer_reserve(w, 1) < 0) {
        return -1;
    }
    w->data[w->len++] = value == Py_True ? 1 : 0;
    return 0;
}

static int
pack_bytes(writer *w, PyObject *value)
{
    if (PyBytes_Check(value)) {
        return write_span(w, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    }
    Py_buffer view;
    if (get_byte_view(value, &view, "Vec<u8> field needs a bytes-like object, got %U") < 0) {
        return -1;
    }
    int rc = write_span(w, view.buf, view.len);
    PyBuffer_Release(&view);
    return rc;
}

/* Encode values[0..n) by the codes of fmt (a ready str of length n) into w. */
static int
pack_values(writer *w, PyObject *fmt, PyObject *const *values, Py_ssize_t n)
{
    const int kind = PyUnicode_KIND(fmt);
    const void *codes = PyUnicode_DATA(fmt);
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        const Py_UCS4 code = PyUnicode_READ(kind, codes, i);
        PyObject *value = values[i];
        switch (code) {
        case 'u':
            rc = pack_varint(w, value, U64_MAX);
            break;
        case 's':
            rc = pack_str(w, value, "str field needs a str, got %U");
            break;
        case 'S':
            rc = pack_str_seq(w, value);
            break;
        case 'w':
            rc = pack_varint(w, value, U32_MAX);
            break;
        case '?':
            rc = pack_bool(w, value);
            break;
        case 'y':
            rc = pack_bytes(w, value);
            break;
        default:
            unknown_code(code);
            rc = -1;
            break;
        }
    }
    return rc;
}

PyDoc_STRVAR(pack_doc,
             "pack(fmt, *values)\n--\n\n"
             "Encode one value per format code as postcard and return the bytes.\n\n"
             "Values out of range raise ValueError, values of the wrong type TypeError.");

static PyObject *
pack(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "pack() needs a format string");
        return NULL;
    }
    PyObject *fmt = args[0];
    if (!PyUnicode_Check(fmt)) {
        raise_type_error("pack format must be a str, got %U", fmt);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(fmt) < 0) {
        return NULL;
    }
#endif
    const Py_ssize_t n = PyUnicode_GET_LENGTH(fmt);
    if (nargs - 1 != n) {
        PyErr_Format(PyExc_TypeError, "pack format %R takes %zd values, got %zd", fmt, n,
                     nargs - 1);
        return NULL;
    }
    writer w;
    writer_init(&w);
    int rc = pack_values(&w, fmt, args + 1, n);
    PyObject *result = NULL;
    if (rc == 0) {
        result = PyBytes_FromStringAndSize((const char *)w.data, w.len);
    }
    writer_release(&w);
    return result;
}

/* ------------------------------------------------------------------------ */
/* CortEX kernels                                                            */
/*
 * Two hot paths of net_core.cortex done in one C call each. The XXH3-64 hash
 * is not reimplemented here: the caller passes xxhash.xxh3_64_intdigest and it
 * is called once per event. The layouts are those of net_core/cortex/_meta.py:
 * a 24-byte little-endian EventMeta header (dispatch u8, flags u8, pad u16,
 * origin_hash u64, seq_or_ts u64, checksum u32) and a postcard tail; the v2
 * checksum is the low 32 bits of XXH3-64 over the header with the checksum
 * slot zeroed, then the tail.
 */

#define META_SIZE 24
#define CHECKSUM_AT 20

static inline uint64_t
load_u64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static inline void
store_u64_le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

/* xxh3(obj) & 0xFFFFFFFF, or -1 with an exception set. */
static int64_t
call_checksum(PyObject *xxh3, PyObject *obj)
{
    PyObject *digest = PyObject_CallOneArg(xxh3, obj);
    if (digest == NULL) {
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(digest);
    Py_DECREF(digest);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    return (int64_t)(v & 0xFFFFFFFFu);
}

static int
as_u64(PyObject *obj, const char *name, uint64_t maximum, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
    }
    else if (v <= maximum) {
        *out = v;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "%s must be in 0..=%llu, got %S", name,
                 (unsigned long long)maximum, obj);
    return -1;
}

PyDoc_STRVAR(seal_record_doc,
             "seal_record(dispatch, flags, origin_hash, seq_or_ts, xxh3, fmt, *values)\n--\n\n"
             "A complete CortEX payload in one call: the EventMeta header with a v2\n"
             "checksum, then pack(fmt, *values) as the tail. xxh3 is\n"
             "xxhash.xxh3_64_intdigest. Same errors as pack() for the values; a header\n"
             "field out of range raises ValueError.");

static PyObject *
seal_record(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 6) {
        PyErr_SetString(PyExc_TypeError,
                        "seal_record() needs dispatch, flags, origin_hash, seq_or_ts, xxh3, fmt");
        return NULL;
    }
    uint64_t dispatch, flags, origin, seq_or_ts;
    if (as_u64(args[0], "dispatch", 0xFF, &dispatch) < 0 ||
        as_u64(args[1], "flags", 0xFF, &flags) < 0 ||
        as_u64(args[2], "origin_hash", U64_MAX, &origin) < 0 ||
        as_u64(args[3], "seq_or_ts", U64_MAX, &seq_or_ts) < 0) {
        return NULL;
    }
    PyObject *xxh3 = args[4];
    PyObject *fmt = args[5];
    if (!PyUnicode_Check(fmt)) {
        raise_type_error("pack format must be a str, got %U", fmt);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(fmt) < 0) {
        return NULL;
    }
#endif
    const Py_ssize_t n = PyUnicode_GET_LENGTH(fmt);
    if (nargs - 6 != n) {
        PyErr_Format(PyExc_TypeError, "pack format %R takes %zd values, got %zd", fmt, n,
                     nargs - 6);
        return NULL;
    }
    writer w;
    writer_init(&w);
    /* The header goes first with a zero checksum slot (the v2 input). */
    unsigned char *head = w.data;
    memset(head, 0, META_SIZE);
    head[0] = (unsigned char)dispatch;
    head[1] = (unsigned char)flags;
    store_u64_le(head + 4, origin);
    store_u64_le(head + 12, seq_or_ts);
    w.len = META_SIZE;
    PyObject *result = NULL;
    if (pack_values(&w, fmt, args + 6, n) == 0) {
        result = PyBytes_FromStringAndSize((const char *)w.data, w.len);
    }
    writer_release(&w);
    if (result == NULL) {
        return NULL;
    }
    const int64_t checksum = call_checksum(xxh3, result);
    if (checksum < 0) {
        Py_DECREF(result);
        return NULL;
    }
    /* The bytes object is ours alone (refcount 1, never hashed): fill the slot. */
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (int i = 0; i < 4; i++) {
        out[CHECKSUM_AT + i] = (unsigned char)((uint64_t)checksum >> (8 * i));
    }
    return result;
}

/* Build task_cls(id, title, status, created, updated) from new references
 * (stolen, also on failure). */
static PyObject *
new_task(PyTypeObject *cls, PyObject *id, PyObject *title, PyObject *status, PyObject *created,
         PyObject *updated, PyObject *pending_singleton, PyObject *completed_singleton)
{
    PyObject *task = cls->tp_alloc(cls, 5);
    if (task == NULL) {
        Py_DECREF(id);
        Py_DECREF(title);
        Py_DECREF(status);
        Py_DECREF(created);
        Py_DECREF(updated);
        return NULL;
    }
    PyTuple_SET_ITEM(task, 0, id);
    PyTuple_SET_ITEM(task, 1, title);
    PyTuple_SET_ITEM(task, 2, status);
    PyTuple_SET_ITEM(task, 3, created);
    PyTuple_SET_ITEM(task, 4, updated);
    untrack_if_atomic(task, pending_singleton, completed_singleton);
    return task;
}

/*
 * Fold one verified Tasks event into tasks. Returns 1 when applied, 0 when the
 * event needs the Python path (malformed tail, unexpected record type; nothing
 * was changed and no exception is left set), -1 on a real error.
 */
static int
fold_one_task(PyObject *error, PyObject *tasks, PyTypeObject *task_cls, PyObject *pending,
              PyObject *completed, unsigned int dispatch, const unsigned char *tail,
              Py_ssize_t tail_len)
{
    reader r = {tail, tail_len, error};
    Py_ssize_t pos = 0;
    uint64_t id = 0, now = 0;
    if (dispatch < 1 || dispatch > 4) {
        return 1; /* an unknown dispatch is ignored: a successful apply */
    }
    if (read_varint(&r, &pos, U64_WIDTH, U64_MAX, "u64", &id) < 0) {
        goto malformed;
    }
    PyObject *title = NULL;
    if (dispatch == 1 || dispatch == 2) {
        title = read_str(&r, &pos);
        if (title == NULL) {
            goto malformed;
        }
    }
    if (dispatch != 4 && read_varint(&r, &pos, U64_WIDTH, U64_MAX, "u64", &now) < 0) {
        Py_XDECREF(title);
        goto malformed;
    }
    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (key == NULL) {
        Py_XDECREF(title);
        return -1;
    }
    int rc = 1;
    if (dispatch == 1) { /* CREATED: insert or fully reset */
        PyObject *when = PyLong_FromUnsignedLongLong(now);
        if (when == NULL) {
            Py_DECREF(title);
            Py_DECREF(key);
            return -1;
        }
        PyObject *task = new_task(task_cls, Py_NewRef(key), title, Py_NewRef(pending),
                                  Py_NewRef(when), when, pending, completed);
        rc = task == NULL ? -1 : (PyDict_SetItem(tasks, key, task) < 0 ? -1 : 1);
        Py_XDECREF(task);
        Py_DECREF(key);
        return rc;
    }
    PyObject *old = PyDict_GetItemWithError(tasks, key); /* borrowed */
    if (old == NULL) {
        Py_XDECREF(title);
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 1; /* unknown id: a no-op */
    }
    if (Py_TYPE(old) != task_cls || PyTuple_GET_SIZE(old) != 5) {
        Py_XDECREF(title);
        Py_DECREF(key);
        return 0; /* someone put something else in the state: let Python decide */
    }
    if (dispatch == 4) { /* DELETED */
        rc = PyDict_DelItem(tasks, key) < 0 ? -1 : 1;
        Py_DECREF(key);
        return rc;
    }
    PyObject *when = PyLong_FromUnsignedLongLong(now);
    if (when == NULL) {
        Py_XDECREF(title);
        Py_DECREF(key);
        return -1;
    }
    Py_INCREF(old); /* SetItem below may drop the dict's reference */
    PyObject *task;
    if (dispatch == 2) { /* RENAMED: title + updated */
        task = new_task(task_cls, Py_NewRef(key), title, Py_NewRef(PyTuple_GET_ITEM(old, 2)),
                        Py_NewRef(PyTuple_GET_ITEM(old, 3)), when, pending, completed);
    }
    else { /* COMPLETED: status + updated */
        task = new_task(task_cls, Py_NewRef(key), Py_NewRef(PyTuple_GET_ITEM(old, 1)),
                        Py_NewRef(completed), Py_NewRef(PyTuple_GET_ITEM(old, 3)), when, pending,
                        completed);
    }
    rc = task == NULL ? -1 : (PyDict_SetItem(tasks, key, task) < 0 ? -1 : 1);
    Py_XDECREF(task);
    Py_DECREF(old);
    Py_DECREF(key);
    return rc;
malformed:
    if (!PyErr_ExceptionMatches(error)) {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

PyDoc_STRVAR(fold_tasks_doc,
             "fold_tasks(payloads, start, tasks, origin_hash, app_seq, task_cls, pending,\n"
             "           completed, xxh3)\n--\n\n"
             "Fold payloads[start:] (a list of bytes, in seq order) into\n"
             "the tasks dict for as long as every event is a well-formed v2 record, and\n"
             "stop at the first one that is not (a v1 checksum, a bad checksum, a short\n"
             "payload, a nonzero pad, a malformed tail): the Python fold handles that one\n"
             "with the full rules and errors. Returns (index of the first event not\n"
             "folded, new app_seq).");

static PyObject *
fold_tasks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "fold_tasks() takes 9 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *items = args[0], *tasks = args[2], *task_cls = args[5];
    PyObject *pending = args[6], *completed = args[7], *xxh3 = args[8];
    if (!PyList_Check(items) || !PyDict_Check(tasks) || !PyType_Check(task_cls) ||
        !PyType_IsSubtype((PyTypeObject *)task_cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "fold_tasks() needs a list, a dict and a tuple subclass");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    uint64_t own_origin, app_seq;
    if (as_u64(args[3], "origin_hash", U64_MAX, &own_origin) < 0 ||
        as_u64(args[4], "app_seq", U64_MAX, &app_seq) < 0) {
        return NULL;
    }
    PyObject *error = get_state(module)->error_class;
    if (error == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "net_core._pcstruct_c: set_error_class() has not been called");
        return NULL;
    }
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *payload = PyList_GET_ITEM(items, i);
        if (!PyBytes_CheckExact(payload)) {
            break;
        }
        const Py_ssize_t len = PyBytes_GET_SIZE(payload);
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(payload);
        if (len < META_SIZE || data[2] != 0 || data[3] != 0) {
            break;
        }
        /* The v2 input: the payload with its checksum slot zeroed. */
        PyObject *input = PyBytes_FromStringAndSize((const char *)data, len);
        if (input == NULL) {
            return NULL;
        }
        memset(PyBytes_AS_STRING(input) + CHECKSUM_AT, 0, 4);
        const int64_t computed = call_checksum(xxh3, input);
        Py_DECREF(input);
        if (computed < 0) {
            return NULL;
        }
        const uint32_t stored = (uint32_t)data[20] | (uint32_t)data[21] << 8 |
                                (uint32_t)data[22] << 16 | (uint32_t)data[23] << 24;
        if ((uint32_t)computed != stored) {
            break;
        }
        /* The Python path could re-enter and mutate the list; nothing below runs
         * Python code except dict operations on int keys, so the borrowed
         * payload stays valid. */
        Py_INCREF(payload);
        const int rc = fold_one_task(error, tasks, (PyTypeObject *)task_cls, pending, completed,
                                     data[0], data + META_SIZE, len - META_SIZE);
        Py_DECREF(payload);
        if (rc < 0) {
            return NULL;
        }
        if (rc == 0) {
            break;
        }
        const uint64_t origin = load_u64_le(data + 4);
        const uint64_t counter = load_u64_le(data + 12);
        if (origin == own_origin && counter >= app_seq && counter != U64_MAX) {
            app_seq = counter + 1;
        }
    }
    return Py_BuildValue("(nK)", i, (unsigned long long)app_seq);
}

/* ------------------------------------------------------------------------ */
/* Module                                                                    */

PyDoc_STRVAR(set_error_class_doc,
             "set_error_class(cls)\n--\n\n"
             "Set the exception class unpack_from() raises on malformed input.");

static PyObject *
set_error_class(PyObject *module, PyObject *cls)
{
    if (!PyExceptionClass_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "set_error_class needs an exception class, got %R", cls);
        return NULL;
    }
    Py_XSETREF(get_state(module)->error_class, Py_NewRef(cls));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(make_record_doc,
             "make_record(cls, *items)\n--\n\n"
             "Build an instance of the tuple subclass cls (a NamedTuple) from items,\n"
             "without the tuple copy tuple.__new__(cls, items) makes.");

static PyObject *
make_record(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "make_record needs a tuple subclass and its items");
        return NULL;
    }
    PyObject *cls = args[0];
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_Format(PyExc_TypeError, "make_record needs a tuple subclass, got %R", cls);
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t n = nargs - 1;
    /* tp_alloc of a tuple subclass returns a zeroed, GC-tracked object with room for n
       items; the items are filled before anyone else can see the object. */
    PyObject *obj = type == &PyTuple_Type ? PyTuple_New(n) : type->tp_alloc(type, n);
    if (obj == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(obj, i, Py_NewRef(args[i + 1]));
    }
    untrack_if_atomic(obj, NULL, NULL);
    return obj;
}

static PyMethodDef pcstruct_methods[] = {
    {"unpack_from", (PyCFunction)(void (*)(void))unpack_from, METH_FASTCALL | METH_KEYWORDS,
     unpack_from_doc},
    {"pack", (PyCFunction)(void (*)(void))pack, METH_FASTCALL, pack_doc},
    {"set_error_class", set_error_class, METH_O, set_error_class_doc},
    {"make_record", (PyCFunction)(void (*)(void))make_record, METH_FASTCALL, make_record_doc},
    {"seal_record", (PyCFunction)(void (*)(void))seal_record, METH_FASTCALL, seal_record_doc},
    {"fold_tasks", (PyCFunction)(void (*)(void))fold_tasks, METH_FASTCALL, fold_tasks_doc},
    {NULL, NULL, 0, NULL},
};

static int
pcstruct_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(get_state(module)->error_class);
    return 0;
}

static int
pcstruct_clear(PyObject *module)
{
    Py_CLEAR(get_state(module)->error_class);
    return 0;
}

static void
pcstruct_free(void *module)
{
    pcstruct_clear((PyObject *)module);
}

static PyModuleDef_Slot pcstruct_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
             "C twin of net_core.cortex._pcstruct: postcard record packing in one call.\n\n"
             "Use it through net_core.cortex._pcstruct, which registers PostcardError\n"
             "with set_error_class() and falls back to Python when this is not built.");

static struct PyModuleDef pcstruct_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "net_core._pcstruct_c",
    .m_doc = module_doc,
    .m_size = sizeof(module_state),
    .m_methods = pcstruct_methods,
    .m_slots = pcstruct_slots,
    .m_traverse = pcstruct_traverse,
    .m_clear = pcstruct_clear,
    .m_free = pcstruct_free,
};

PyMODINIT_FUNC
PyInit__pcstruct_c(void)
{
    return PyModuleDef_Init(&pcstruct_module);
}
