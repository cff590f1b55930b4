# cython: language_level=3, freethreading_compatible=True, embedsignature=True
"""The Cython twin of the FIBP hot path (:mod:`fila.protocol.pure` is the reference).

Same names, signatures, return values, exception types and messages as the
pure twin; every failure is built by :mod:`fila.protocol._failures`; the
protocol constants are typed C constants from ``_constants.pxd``, generated
from :mod:`fila.protocol.constants`. Reads go through a ``{buf, len, pos}``
reader with a bounds check before each load; big-endian integers are loaded
with ``memcpy`` and a byte swap; strings are decoded strictly straight from
the input buffer (ASCII: checked a word at a time, then ``PyUnicode_New`` +
copy). Encoders size the frame first, allocate
one ``bytes`` and write through its pointer; Enqueue walks each headers dict
once (into a scratch buffer) and copies every payload exactly once.

No module-level mutable state: repeated strings (queue, header keys and
values, fairness key, throttle keys) are reused through a small hash table
keyed by their raw bytes, and a Delivery message's fairness key, weight and
throttle keys are reused when their bytes equal the previous message's (each
message makes a list of its own on first read). That cache lives on the stack of one
``decode_delivery`` call, or inside one ``FrameReader`` (used under its
critical section). A Delivery frame the reader decoded cuts its ``payload``
from the fed ``bytes`` only when asked for it.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release
from cpython.bytearray cimport PyByteArray_Check
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches
from cpython.list cimport PyList_AsTuple, PyList_Check, PyList_CheckExact
from cpython.long cimport PyLong_Check, PyLong_CheckExact, PyLong_FromUnsignedLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_Check, PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from fila._speedups._constants cimport (
    DEFAULT_MAX_PENDING_STREAMS,
    DEFAULT_MAX_REASSEMBLED_SIZE,
    ERROR_CODE_BY_BYTE,
    FLAG_CONTINUATION,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_DECODED_COUNT,
    MAX_FRAME_SIZE,
    MAX_U16,
    MAX_U32,
    MAX_U64,
    OP_ACK,
    OP_DELIVERY,
    OP_ENQUEUE,
    OP_NACK,
)

from dataclasses import FrozenInstanceError

from fila import errors as _errors  # a module: fila.errors is still importing when we are
from fila.protocol import _failures
from fila.protocol import pure as _pure

__all__ = [
    "IMPLEMENTATION",
    "ConsumeMessage",
    "Message",
    "Frame",
    "FrameReader",
    "encode_enqueue",
    "encode_ack",
    "encode_nack",
    "decode_delivery",
    "decode_enqueue_result",
    "decode_ack_result",
    "decode_nack_result",
]

IMPLEMENTATION = "cython"


cdef extern from "Python.h":
    PyObject *PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    bint PyUnicode_Check(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except? NULL
    bint PyMemoryView_Check(object o)
    object PyList_New(Py_ssize_t n)
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1
    object PyBytes_FromStringAndSize_raw "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n)
    char *PyBytes_AS_STRING_raw "PyBytes_AS_STRING"(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    object PyDict_New()
    int PyObject_GetBuffer(object o, Py_buffer *view, int flags)  # no auto-raise: we fall back
    void _list_set "PyList_SET_ITEM"(object o, Py_ssize_t i, object v)
    void _list_set_raw "PyList_SET_ITEM"(object o, Py_ssize_t i, PyObject *v)
    Py_ssize_t PyByteArray_GET_SIZE(object o)

# Unaligned-safe big-endian loads and stores (memcpy + byte swap), an ASCII
# check and a small hash for the repeated-string cache.
cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #if defined(__GNUC__) || defined(__clang__)
    #  define FILA_BSWAP16(x) __builtin_bswap16(x)
    #  define FILA_BSWAP32(x) __builtin_bswap32(x)
    #  define FILA_BSWAP64(x) __builtin_bswap64(x)
    #else
    static inline uint16_t FILA_BSWAP16(uint16_t x) { return (uint16_t)((x >> 8) | (x << 8)); }
    static inline uint32_t FILA_BSWAP32(uint32_t x) {
        return ((x & 0xFFu) << 24) | ((x & 0xFF00u) << 8) | ((x >> 8) & 0xFF00u) | (x >> 24);
    }
    static inline uint64_t FILA_BSWAP64(uint64_t x) {
        return ((uint64_t)FILA_BSWAP32((uint32_t)x) << 32) | FILA_BSWAP32((uint32_t)(x >> 32));
    }
    #endif
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #  define FILA_BE16(x) (x)
    #  define FILA_BE32(x) (x)
    #  define FILA_BE64(x) (x)
    #else
    #  define FILA_BE16(x) FILA_BSWAP16(x)
    #  define FILA_BE32(x) FILA_BSWAP32(x)
    #  define FILA_BE64(x) FILA_BSWAP64(x)
    #endif
    static inline uint16_t fila_ld16(const char *p) { uint16_t v; memcpy(&v, p, 2); return FILA_BE16(v); }
    static inline uint32_t fila_ld32(const char *p) { uint32_t v; memcpy(&v, p, 4); return FILA_BE32(v); }
    static inline uint64_t fila_ld64(const char *p) { uint64_t v; memcpy(&v, p, 8); return FILA_BE64(v); }
    static inline void fila_st16(char *p, uint16_t v) { v = FILA_BE16(v); memcpy(p, &v, 2); }
    static inline void fila_st32(char *p, uint32_t v) { v = FILA_BE32(v); memcpy(p, &v, 4); }
    /* Short strings are read with (possibly overlapping) whole-word loads:
       no byte loop, and no byte-wise copy into a word (a store-forwarding stall). */
    static inline uint64_t fila_word(const char *p, Py_ssize_t n) {  /* 0 < n < 8 */
        uint32_t a, b;
        if (n >= 4) {
            memcpy(&a, p, 4); memcpy(&b, p + n - 4, 4);
            return ((uint64_t)a << 32) | b;
        }
        return (uint64_t)(uint8_t)p[0] | ((uint64_t)(uint8_t)p[n >> 1] << 8) | ((uint64_t)(uint8_t)p[n - 1] << 16);
    }
    static inline int fila_is_ascii(const char *p, Py_ssize_t n) {
        uint64_t acc = 0, v;
        const char *last;
        if (n < 8)
            return n <= 0 || (fila_word(p, n) & 0x8080808080808080ULL) == 0;
        last = p + n - 8;
        while (p < last) { memcpy(&v, p, 8); acc |= v; p += 8; }
        memcpy(&v, last, 8);
        return ((acc | v) & 0x8080808080808080ULL) == 0;
    }
    /* Both at once, for strings the repeated-string cache may hold (0 < n). */
    static inline int fila_ascii_hash(const char *p, Py_ssize_t n, uint64_t *out) {
        uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, acc = 0, v;
        const char *last;
        if (n < 8) {
            v = fila_word(p, n);
            acc = v;
            h = (h ^ v) * 0x94D049BB133111EBULL;
        } else {
            last = p + n - 8;
            while (p < last) { memcpy(&v, p, 8); acc |= v; h = (h ^ v) * 0xBF58476D1CE4E5B9ULL; p += 8; }
            memcpy(&v, last, 8);
            acc |= v;
            h = (h ^ v) * 0x94D049BB133111EBULL;
        }
        *out = h ^ (h >> 31);
        return (acc & 0x8080808080808080ULL) == 0;
    }
    static inline int fila_eq(const char *a, const char *b, Py_ssize_t n) {  /* 0 < n */
        uint64_t x, y;
        Py_ssize_t i;
        if (n < 8)
            return fila_word(a, n) == fila_word(b, n);
        for (i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8); memcpy(&y, b + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8); memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    /* Copy n bytes, short ones inline (no call into libc). */
    static inline void fila_copy(char *d, const char *s, Py_ssize_t n) {
        uint64_t a, b, c, e;
        uint32_t x, y;
        if (n <= 16) {
            if (n >= 8) {
                memcpy(&a, s, 8); memcpy(&b, s + n - 8, 8);
                memcpy(d, &a, 8); memcpy(d + n - 8, &b, 8);
            } else if (n >= 4) {
                memcpy(&x, s, 4); memcpy(&y, s + n - 4, 4);
                memcpy(d, &x, 4); memcpy(d + n - 4, &y, 4);
            } else if (n > 0) {
                char p = s[0], q = s[n >> 1], r = s[n - 1];
                d[0] = p; d[n >> 1] = q; d[n - 1] = r;
            }
        } else if (n <= 32) {
            memcpy(&a, s, 8); memcpy(&b, s + 8, 8); memcpy(&c, s + n - 16, 8); memcpy(&e, s + n - 8, 8);
            memcpy(d, &a, 8); memcpy(d + 8, &b, 8); memcpy(d + n - 16, &c, 8); memcpy(d + n - 8, &e, 8);
        } else {
            memcpy(d, s, (size_t)n);
        }
    }
    static inline const char *fila_ascii_data(PyObject *o) { return (const char *)(((PyASCIIObject *)o) + 1); }
    static inline int fila_ctz64(uint64_t x) {  /* x != 0 */
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctzll(x);
    #else
        int i = 0;
        while (!(x & 1)) { x >>= 1; i++; }
        return i;
    #endif
    }
    """
    uint16_t fila_ld16(const char *p) nogil
    uint32_t fila_ld32(const char *p) nogil
    uint64_t fila_ld64(const char *p) nogil
    void fila_st16(char *p, uint16_t v) nogil
    void fila_st32(char *p, uint32_t v) nogil
    bint fila_is_ascii(const char *p, Py_ssize_t n) nogil
    bint fila_ascii_hash(const char *p, Py_ssize_t n, uint64_t *out) nogil
    bint fila_eq(const char *a, const char *b, Py_ssize_t n) nogil
    int fila_ctz64(uint64_t x) nogil
    void fila_copy(char *d, const char *s, Py_ssize_t n) nogil
    const char *fila_ascii_data(object o)

# ----------------------------------------------------------------- failures
# Cold paths: every exception comes from fila.protocol._failures.


cdef int _incomplete(object what, Py_ssize_t offset, Py_ssize_t need, Py_ssize_t have) except -1:
    raise _failures.incomplete(what, offset, need, have)


cdef int _bad_utf8(object what, Py_ssize_t offset) except -1:
    if PyErr_ExceptionMatches(UnicodeDecodeError):
        PyErr_Clear()
        raise _failures.invalid_utf8(what, offset)
    return -1  # another error (MemoryError) is already set


cdef int _count_exceeds(object what, Py_ssize_t offset, uint64_t count) except -1:
    raise _failures.count_exceeds(what, offset, count)


# ------------------------------------------------------- repeated strings

cdef enum:
    CACHE_SLOTS = 64  # the bitmap of used slots is one uint64_t (fila_cache below too)
    CACHE_MAX_LEN = 64
    TAIL_RAW_MAX = 128

# Defined in C so that the hit path (fila_cache_find) can be forced inline.
cdef extern from *:
    """
    typedef struct {
        PyObject *s;
        const char *d;   /* its characters (a compact ASCII str) */
        uint64_t h;
        Py_ssize_t n;
        int hit;         /* reused since stored (or since it last fended off a newcomer) */
    } fila_centry;
    typedef struct {
        uint64_t used;   /* bit i: e[i] holds a string (so a fresh cache costs one store) */
        fila_centry e[64];
        /* The last Delivery message's fairness_key, weight and throttle_keys,
           and their raw bytes: reused whole when the next message has the same bytes. */
        PyObject *tail_fkey;
        PyObject *tail_tkeys;
        uint32_t tail_weight;
        Py_ssize_t tail_len;
        char tail_raw[128];
    } fila_cache;
    #if defined(__GNUC__) || defined(__clang__)
    #  define FILA_ALWAYS_INLINE inline __attribute__((always_inline))
    #elif defined(_MSC_VER)
    #  define FILA_ALWAYS_INLINE __forceinline
    #else
    #  define FILA_ALWAYS_INLINE inline
    #endif
    static inline int fila_slot(uint64_t h) { return (int)((h * 0x9E3779B97F4A7C15ULL) >> 58); }
    /* The cached str (borrowed) for the n bytes at p, or NULL. *h gets the
       hash, or stays 0 when the string cannot be cached (empty, long, not ASCII). */
    static FILA_ALWAYS_INLINE PyObject *fila_cache_find(fila_cache *c, const char *p, Py_ssize_t n, uint64_t *hp) {
        uint64_t h;
        int slot;
        fila_centry *e;
        *hp = 0;
        if (n == 0 || n > 64 || !fila_ascii_hash(p, n, &h))
            return NULL;
        h |= 1;  /* never 0 */
        *hp = h;
        slot = fila_slot(h);
        e = &c->e[slot];
        if (((c->used >> slot) & 1) && e->h == h && e->n == n && fila_eq(e->d, p, n)) {
            e->hit = 1;
            return e->s;
        }
        return NULL;
    }
    """
    ctypedef struct cache_entry "fila_centry":
        PyObject *s
        const char *d
        uint64_t h
        Py_ssize_t n
        bint hit
    ctypedef struct str_cache "fila_cache":
        uint64_t used
        cache_entry e[64]
        PyObject *tail_fkey
        PyObject *tail_tkeys
        uint32_t tail_weight
        Py_ssize_t tail_len
        char tail_raw[128]
    int fila_slot(uint64_t h) nogil
    PyObject *fila_cache_find(str_cache *c, const char *p, Py_ssize_t n, uint64_t *h) nogil


cdef inline void _cache_init(str_cache *c) noexcept nogil:
    c.used = 0
    c.tail_fkey = NULL
    c.tail_tkeys = NULL
    c.tail_len = 0


cdef void _cache_clear(str_cache *c) noexcept:
    cdef uint64_t used = c.used
    cdef int i
    c.used = 0
    while used:
        i = fila_ctz64(used)
        used &= used - 1
        Py_XDECREF(c.e[i].s)
        c.e[i].s = NULL
    Py_XDECREF(c.tail_fkey)
    Py_XDECREF(c.tail_tkeys)
    c.tail_fkey = NULL
    c.tail_tkeys = NULL
    c.tail_len = 0


cdef void _cache_tail(str_cache *c, const char *raw, Py_ssize_t n, object fkey, uint32_t weight,
                      tuple tkeys) noexcept:
    Py_INCREF(fkey)
    Py_INCREF(tkeys)
    Py_XDECREF(c.tail_fkey)
    Py_XDECREF(c.tail_tkeys)
    c.tail_fkey = <PyObject *>fkey
    c.tail_tkeys = <PyObject *>tkeys
    c.tail_weight = weight
    c.tail_len = n
    memcpy(c.tail_raw, raw, <size_t>n)


cdef inline list _list_of(tuple items):
    """A new list of the items of ``items`` (the cached throttle keys)."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(items)
    out = PyList_New(n)
    for i in range(n):
        item = <object>PyTuple_GET_ITEM(items, i)
        Py_INCREF(item)
        _list_set(out, i, item)
    return out


cdef inline object _ascii_str(const char *p, Py_ssize_t n):
    s = PyUnicode_New(n, 127)
    fila_copy(<char *>fila_ascii_data(s), p, n)
    return s


cdef object _cache_store(const char *p, Py_ssize_t n, str_cache *cache, uint64_t h):
    """The miss path of ``_cstr``: a new str for ``n`` ASCII bytes, kept in
    the slot of hash ``h`` unless that slot's string is in use."""
    cdef int slot = fila_slot(h)
    cdef cache_entry *e = &cache.e[slot]
    cdef uint64_t bit = (<uint64_t>1) << slot
    if cache.used & bit:
        if e.hit:
            # a string in use keeps its slot against one newcomer (unique
            # values, a trace id, must not evict the queue)
            e.hit = False
            return _ascii_str(p, n)
        Py_XDECREF(e.s)
        e.s = NULL
        cache.used &= ~bit
    s = _ascii_str(p, n)
    Py_INCREF(s)
    cache.used |= bit
    e.s = <PyObject *>s
    e.d = fila_ascii_data(s)
    e.h = h
    e.n = n
    e.hit = False
    return s


cdef object _make_str(const char *p, Py_ssize_t n):
    """A str for ``n`` UTF-8 bytes at ``p``; None-with-error on invalid UTF-8."""
    cdef PyObject *raw
    if n == 0:
        return ""
    if fila_is_ascii(p, n):
        return _ascii_str(p, n)
    raw = PyUnicode_DecodeUTF8(p, n, "strict")
    if raw == NULL:
        return None  # the caller maps the UnicodeDecodeError
    s = <object>raw  # the cast took a reference of its own
    Py_DECREF(s)
    return s


# --------------------------------------------------------------------- reader

ctypedef struct rd_t:
    const char *buf
    Py_ssize_t len
    Py_ssize_t pos


cdef inline uint16_t _u16(rd_t *r, object what) except? 0xFFFF:
    cdef uint16_t v
    if r.len - r.pos < 2:
        _incomplete(what, r.pos, 2, r.len - r.pos)
        return 0xFFFF
    v = fila_ld16(r.buf + r.pos)
    r.pos += 2
    return v


cdef inline int64_t _u32(rd_t *r, object what) except -1:
    cdef uint32_t v
    if r.len - r.pos < 4:
        return _incomplete(what, r.pos, 4, r.len - r.pos)
    v = fila_ld32(r.buf + r.pos)
    r.pos += 4
    return v


cdef inline int _u64(rd_t *r, object what, uint64_t *out) except -1:
    if r.len - r.pos < 8:
        return _incomplete(what, r.pos, 8, r.len - r.pos)
    out[0] = fila_ld64(r.buf + r.pos)
    r.pos += 8
    return 0


cdef inline object _str(rd_t *r, object what):
    cdef Py_ssize_t n
    if r.len - r.pos < 2:
        _incomplete(what, r.pos, 2, r.len - r.pos)
    n = fila_ld16(r.buf + r.pos)
    r.pos += 2
    if r.len - r.pos < n:
        _incomplete(what, r.pos, n, r.len - r.pos)
    s = _make_str(r.buf + r.pos, n)
    if s is None:
        _bad_utf8(what, r.pos)
    r.pos += n
    return s


cdef inline object _cstr(rd_t *r, object what, str_cache *cache):
    """``_str`` through the repeated-string cache (hits inline, the rest not)."""
    cdef Py_ssize_t n
    cdef const char *p
    cdef uint64_t h
    cdef PyObject *found
    if cache == NULL:
        return _str(r, what)
    if r.len - r.pos < 2:
        _incomplete(what, r.pos, 2, r.len - r.pos)
    n = fila_ld16(r.buf + r.pos)
    r.pos += 2
    if r.len - r.pos < n:
        _incomplete(what, r.pos, n, r.len - r.pos)
    p = r.buf + r.pos
    found = fila_cache_find(cache, p, n, &h)
    if found != NULL:
        r.pos += n
        return <object>found
    if h == 0:
        return _str_at(r, n, what)
    r.pos += n
    return _cache_store(p, n, cache, h)


cdef object _str_at(rd_t *r, Py_ssize_t n, object what):
    s = _make_str(r.buf + r.pos, n)
    if s is None:
        _bad_utf8(what, r.pos)
    r.pos += n
    return s


# ------------------------------------------------------------------- message


@cython.final
@cython.freelist(256)
cdef class ConsumeMessage:
    """A delivered message: fila-python 0.3.0's ``ConsumeMessage``.

    It behaves as that ``@dataclass(frozen=True)``: the same fields in the
    same order (the first six required), ``dataclasses.fields``, ``asdict``
    and ``replace`` work, equality compares every field, assigning raises
    ``dataclasses.FrozenInstanceError``, and the hash is that of the field
    values (so a message with a ``headers`` dict is unhashable). A delivered
    message always has ``throttle_keys`` as a list (possibly empty);
    timestamps are Unix milliseconds (0 when the server does not know them).
    """

    cdef readonly object id
    cdef readonly object headers
    cdef readonly object payload
    cdef readonly object fairness_key
    cdef readonly object attempt_count
    cdef readonly object queue
    cdef readonly object weight
    cdef object _throttle_keys
    # A decoded message holds its throttle keys as a tuple shared with the
    # decoder's cache, and makes its own list on first read: a list per
    # message cost the decoders ~14% (codec benchmark, Delivery rows), and
    # most consumers never read the field.
    cdef tuple _shared_keys
    cdef readonly object enqueued_at
    cdef readonly object leased_at

    # the dataclasses metadata of the pure twin's class (built once, from a real dataclass)
    __dataclass_fields__ = _pure.DATACLASS_FIELDS
    __dataclass_params__ = _pure.DATACLASS_PARAMS
    __match_args__ = _pure.FIELD_NAMES
    __signature__ = _pure.SIGNATURE

    def __init__(
        self,
        id,
        headers,
        payload,
        fairness_key,
        attempt_count,
        queue,
        weight=0,
        throttle_keys=None,
        enqueued_at=0,
        leased_at=0,
    ):
        self.id = id
        self.headers = headers
        self.payload = payload
        self.fairness_key = fairness_key
        self.attempt_count = attempt_count
        self.queue = queue
        self.weight = weight
        self._throttle_keys = throttle_keys
        self._shared_keys = None
        self.enqueued_at = enqueued_at
        self.leased_at = leased_at

    @property
    def throttle_keys(self):
        return self._keys()

    cdef object _keys(self):
        if self._shared_keys is not None:
            with cython.critical_section(self):
                if self._shared_keys is not None:
                    self._throttle_keys = _list_of(self._shared_keys)
                    self._shared_keys = None
        return self._throttle_keys

    def __setattr__(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    cdef tuple _values(self):
        return (
            self.id,
            self.headers,
            self.payload,
            self.fairness_key,
            self.attempt_count,
            self.queue,
            self.weight,
            self._keys(),
            self.enqueued_at,
            self.leased_at,
        )

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == (<ConsumeMessage>other)._values()

    def __hash__(self):
        return hash(self._values())

    def __repr__(self):
        return _pure._message_repr(self)

    def __reduce__(self):
        return (self.__class__, self._values())


Message = ConsumeMessage


# --------------------------------------------------------------------- frame


@cython.final
@cython.freelist(256)
cdef class Frame:
    """One whole frame (continuations already joined). Immutable.

    ``messages`` holds the decoded messages of a Delivery frame when the
    reader was made with ``decode_deliveries=True``; otherwise None.
    """

    cdef object _opcode
    cdef object _flags
    cdef object _request_id
    cdef object _payload  # None while it is still a slice of _src
    cdef object _messages
    cdef bytes _src  # a decoded Delivery's payload is cut from the fed bytes on demand
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end

    def __init__(self, opcode, flags, request_id, payload, messages=None):
        self._opcode = opcode
        self._flags = flags
        self._request_id = request_id
        self._payload = payload
        self._messages = messages
        self._src = None

    @property
    def opcode(self):
        return self._opcode

    @property
    def flags(self):
        return self._flags

    @property
    def request_id(self):
        return self._request_id

    @property
    def payload(self):
        with cython.critical_section(self):
            if self._src is not None:
                self._payload = PyBytes_FromStringAndSize_raw(
                    PyBytes_AS_STRING_raw(self._src) + self._start, self._end - self._start)
                self._src = None
            return self._payload

    @property
    def messages(self):
        return self._messages

    def __eq__(self, other):
        if type(other).__name__ != "Frame" or not hasattr(other, "request_id"):
            return NotImplemented
        return bool(
            self._opcode == other.opcode
            and self._flags == other.flags
            and self._request_id == other.request_id
            and self.payload == other.payload
        )

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        return _pure._frame_repr(self)


cdef inline Frame _new_frame(uint8_t opcode, uint8_t flags, uint32_t request_id, object payload):
    cdef Frame f = Frame.__new__(Frame)
    f._opcode = opcode
    f._flags = flags
    f._request_id = PyLong_FromUnsignedLong(request_id)
    f._payload = payload
    f._messages = None
    f._src = None
    return f


# ------------------------------------------------------------------ decoders


cdef enum:
    MSGS_STACK = 32


cdef int _grow_msgs(PyObject ***msgs, Py_ssize_t *cap, PyObject **stack) except -1:
    cdef Py_ssize_t n = cap[0] * 2
    cdef PyObject **grown
    if msgs[0] == stack:
        grown = <PyObject **>PyMem_Malloc(<size_t>n * sizeof(PyObject *))
        if grown != NULL:
            memcpy(grown, stack, <size_t>cap[0] * sizeof(PyObject *))
    else:
        grown = <PyObject **>PyMem_Realloc(msgs[0], <size_t>n * sizeof(PyObject *))
    if grown == NULL:
        raise MemoryError()
    msgs[0] = grown
    cap[0] = n
    return 0


cdef list _decode_delivery(const char *buf, Py_ssize_t size, str_cache *cache):
    cdef rd_t r
    cdef uint32_t count, i
    cdef uint16_t nh, nt, j
    cdef int64_t n
    cdef uint64_t enqueued = 0, leased = 0
    cdef int64_t weight, attempts
    cdef Py_ssize_t start
    cdef ConsumeMessage m
    cdef tuple tkeys
    cdef list out
    # The messages are gathered here and the list made at the end, so no
    # one (gc.get_objects) ever sees a list with empty slots.
    cdef PyObject *stack[MSGS_STACK]
    cdef PyObject **msgs = stack
    cdef Py_ssize_t cap = MSGS_STACK, got = 0, k
    r.buf = buf
    r.len = size
    r.pos = 0
    if size < 4:
        _incomplete("Delivery.messages count", 0, 4, size)
    count = fila_ld32(buf)
    if count > MAX_DECODED_COUNT:
        _count_exceeds("Delivery.messages count", 0, count)
    r.pos = 4
    try:
        for i in range(count):
            mid = _str(&r, "Delivery.message_id")
            queue = _cstr(&r, "Delivery.queue", cache)
            nh = _u16(&r, "Delivery.headers count")
            headers = PyDict_New()
            for j in range(nh):
                key = _cstr(&r, "Delivery.headers key", cache)
                value = _cstr(&r, "Delivery.headers value", cache)
                PyDict_SetItem(headers, key, value)
            n = _u32(&r, "Delivery.payload")
            if r.len - r.pos < n:
                _incomplete("Delivery.payload", r.pos, n, r.len - r.pos)
            body = PyBytes_FromStringAndSize_raw(r.buf + r.pos, n)
            r.pos += n
            start = r.pos
            if (cache != NULL and cache.tail_len and r.len - r.pos >= cache.tail_len
                    and fila_eq(r.buf + r.pos, cache.tail_raw, cache.tail_len)):
                # fairness_key, weight and throttle_keys: the same bytes as the
                # last message's, so the same values
                fkey = <object>cache.tail_fkey
                weight = cache.tail_weight
                tkeys = <tuple>cache.tail_tkeys
                r.pos += cache.tail_len
            else:
                fkey = _cstr(&r, "Delivery.fairness_key", cache)
                weight = _u32(&r, "Delivery.weight")
                nt = _u16(&r, "Delivery.throttle_keys count")
                if nt == 0:
                    tkeys = ()
                else:
                    tkeys = PyTuple_New(nt)
                    for j in range(nt):
                        item = _cstr(&r, "Delivery.throttle_keys item", cache)
                        Py_INCREF(item)
                        PyTuple_SET_ITEM(tkeys, j, item)
                if cache != NULL and r.pos - start <= TAIL_RAW_MAX:
                    _cache_tail(cache, r.buf + start, r.pos - start, fkey, <uint32_t>weight, tkeys)
            attempts = _u32(&r, "Delivery.attempt_count")
            _u64(&r, "Delivery.enqueued_at", &enqueued)
            _u64(&r, "Delivery.leased_at", &leased)
            m = ConsumeMessage.__new__(ConsumeMessage)
            m.id = mid
            m.headers = headers
            m.payload = body
            m.fairness_key = fkey
            m.attempt_count = PyLong_FromUnsignedLong(<unsigned long>attempts)
            m.queue = queue
            m.weight = PyLong_FromUnsignedLong(<unsigned long>weight)
            m._shared_keys = tkeys  # see ConsumeMessage._shared_keys
            m.enqueued_at = PyLong_FromUnsignedLongLong(enqueued)
            m.leased_at = PyLong_FromUnsignedLongLong(leased)
            if got == cap:
                _grow_msgs(&msgs, &cap, stack)
            Py_INCREF(m)
            msgs[got] = <PyObject *>m
            got += 1
        out = PyList_New(got)
        for k in range(got):
            _list_set_raw(out, k, msgs[k])  # steals the reference
        got = 0
        return out
    finally:
        for k in range(got):
            Py_XDECREF(msgs[k])
        if msgs != stack:
            PyMem_Free(msgs)


cdef inline str_cache *_worth_caching(const char *buf, Py_ssize_t size, str_cache *cache) noexcept:
    """``cache`` (made ready) when the payload holds several messages; NULL
    for one message, which has nothing to repeat."""
    if size >= 4 and fila_ld32(buf) < 2:
        return NULL
    _cache_init(cache)
    return cache


def decode_delivery(payload):
    """Every message of a Delivery payload (any count)."""
    cdef Py_buffer view
    cdef str_cache cache
    cdef str_cache *cp
    cdef const char *buf
    if PyBytes_CheckExact(payload):
        buf = PyBytes_AS_STRING_raw(payload)
        cp = _worth_caching(buf, PyBytes_GET_SIZE(payload), &cache)
        try:
            return _decode_delivery(buf, PyBytes_GET_SIZE(payload), cp)
        finally:
            if cp != NULL:
                _cache_clear(cp)
    if PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) != 0:
        PyErr_Clear()
        return decode_delivery(bytes(payload))
    cp = _worth_caching(<const char *>view.buf, view.len, &cache)
    try:
        return _decode_delivery(<const char *>view.buf, view.len, cp)
    finally:
        if cp != NULL:
            _cache_clear(cp)
        PyBuffer_Release(&view)


cdef list _decode_enqueue_result(const char *buf, Py_ssize_t size):
    cdef rd_t r
    cdef uint32_t count, i
    cdef int code
    r.buf = buf
    r.len = size
    r.pos = 0
    if size < 4:
        _incomplete("EnqueueResult.results count", 0, 4, size)
    count = fila_ld32(buf)
    if count > MAX_DECODED_COUNT:
        _count_exceeds("EnqueueResult.results count", 0, count)
    r.pos = 4
    out = []
    for i in range(count):
        if r.len - r.pos < 1:
            _incomplete("EnqueueResult.error_code", r.pos, 1, r.len - r.pos)
        code = ERROR_CODE_BY_BYTE[<uint8_t>r.buf[r.pos]]
        r.pos += 1
        mid = _str(&r, "EnqueueResult.message_id")
        out.append((code, mid))
    return out


def decode_enqueue_result(payload):
    """``(error_code, message_id)`` per message, in request order."""
    cdef Py_buffer view
    if PyBytes_CheckExact(payload):
        return _decode_enqueue_result(PyBytes_AS_STRING_raw(payload), PyBytes_GET_SIZE(payload))
    if PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) != 0:
        PyErr_Clear()
        return decode_enqueue_result(bytes(payload))
    try:
        return _decode_enqueue_result(<const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef list _decode_codes(const char *buf, Py_ssize_t size, str label):
    cdef uint32_t count, i
    if size < 4:
        _incomplete(label + ".results count", 0, 4, size)
    count = fila_ld32(buf)
    if count > MAX_DECODED_COUNT:
        _count_exceeds(label + ".results count", 0, count)
    if size - 4 < <Py_ssize_t>count:
        _incomplete(label + ".error_code", size, 1, 0)
    out = PyList_New(count)
    for i in range(count):
        code = PyLong_FromUnsignedLong(ERROR_CODE_BY_BYTE[<uint8_t>buf[4 + i]])
        Py_INCREF(code)
        _list_set(out, i, code)
    return out


cdef object _codes(object payload, str label):
    cdef Py_buffer view
    if PyBytes_CheckExact(payload):
        return _decode_codes(PyBytes_AS_STRING_raw(payload), PyBytes_GET_SIZE(payload), label)
    if PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) != 0:
        PyErr_Clear()
        return _codes(bytes(payload), label)
    try:
        return _decode_codes(<const char *>view.buf, view.len, label)
    finally:
        PyBuffer_Release(&view)


def decode_ack_result(payload):
    """One error code per acked item, in request order."""
    return _codes(payload, "AckResult")


def decode_nack_result(payload):
    """One error code per nacked item, in request order."""
    return _codes(payload, "NackResult")


# ------------------------------------------------------------- frame reader


cdef object _check_max_frame_size(object value):
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(value):
        raise _failures.bad_max_frame_size(value)
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or not (v == 0 or (HEADER_SIZE < v and <uint64_t>v <= MAX_U32)):
        raise _failures.bad_max_frame_size(value)
    return value or MAX_FRAME_SIZE


@cython.final
cdef class FrameReader:
    """Splits a byte stream into frames, however it was chunked.

    ``feed`` takes bytes as ``recv`` returns them and returns the frames that
    are now whole. Continuation frames are joined per request id (unless
    ``reassemble=False``); a joined frame is returned with flags 0. With
    ``decode_deliveries=True`` every Delivery frame comes out with its
    messages already decoded in ``frame.messages``. A malformed stream (or
    Delivery body, when decoding) raises :class:`~fila.errors.DecodeError`;
    the reader is then unusable (close the connection) and says so on the
    next ``feed``.
    """

    cdef char *_buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _want
    cdef uint64_t _max_frame_size
    cdef object _max_reassembled_size
    cdef object _max_pending_streams
    cdef bint _reassemble
    cdef bint _decode
    cdef bint _busy
    cdef dict _streams
    cdef object _failed
    cdef str_cache _cache

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._len = 0
        self._cap = 0
        self._want = 4
        self._busy = False
        _cache_init(&self._cache)

    def __dealloc__(self):
        _cache_clear(&self._cache)
        if self._buf != NULL:
            PyMem_Free(self._buf)
            self._buf = NULL

    def __init__(
        self,
        max_frame_size=MAX_FRAME_SIZE,
        *,
        max_reassembled_size=DEFAULT_MAX_REASSEMBLED_SIZE,
        max_pending_streams=DEFAULT_MAX_PENDING_STREAMS,
        reassemble=True,
        decode_deliveries=False,
    ):
        self._max_frame_size = _check_max_frame_size(max_frame_size)
        if type(max_reassembled_size) is not int or max_reassembled_size < 0:
            raise _failures.bad_int("max_reassembled_size", max_reassembled_size, MAX_U64)
        if type(max_pending_streams) is not int or max_pending_streams < 0:
            raise _failures.bad_int("max_pending_streams", max_pending_streams, MAX_U32)
        self._reassemble = bool(reassemble)
        self._decode = bool(decode_deliveries)
        if self._decode and not self._reassemble:
            raise _failures.decode_needs_reassembly()
        self._max_reassembled_size = max_reassembled_size
        self._max_pending_streams = max_pending_streams
        self._len = 0
        self._streams = {}
        self._failed = None
        self._want = 4

    @property
    def max_frame_size(self):
        """Largest accepted value of the length prefix (16 MiB by default)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value):
        self._max_frame_size = _check_max_frame_size(value)

    @property
    def buffered(self):
        """Bytes received that do not yet make a whole frame."""
        return self._len

    @property
    def pending_streams(self):
        """Continuation streams started and not yet finished."""
        return len(self._streams)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef char *grown
        if n <= self._cap:
            return 0
        cap = self._cap * 2 if self._cap else 4096
        if cap < n:
            cap = n
        grown = <char *>PyMem_Realloc(self._buf, <size_t>cap)
        if grown == NULL:
            raise MemoryError()
        self._buf = grown
        self._cap = cap
        return 0

    cdef int _keep(self, const char *p, Py_ssize_t n) except -1:
        """Make the internal buffer hold exactly ``n`` bytes from ``p``."""
        if n == 0:
            self._len = 0
            if self._cap > 65536:  # do not keep a huge buffer around idle
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = 0
            return 0
        if p != self._buf:
            self._reserve(n)
            memmove(self._buf, p, <size_t>n)
        self._len = n
        return 0

    def feed(self, data):
        """Add received bytes; return every frame completed by them, in order."""
        cdef Py_buffer view
        cdef bint has_view = False
        cdef const char *src
        cdef Py_ssize_t n
        if self._failed is not None:
            raise _failures.reader_failed(self._failed)
        if self._busy:
            raise RuntimeError("FrameReader.feed() called again while it was running")
        if PyBytes_CheckExact(data):
            src = PyBytes_AS_STRING_raw(data)
            n = PyBytes_GET_SIZE(data)
        elif PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) == 0:
            has_view = True
            src = <const char *>view.buf
            n = view.len
        else:
            PyErr_Clear()
            data = bytes(data)
            src = PyBytes_AS_STRING_raw(data)
            n = PyBytes_GET_SIZE(data)
        self._busy = True
        try:
            with cython.critical_section(self):
                # immutable input: decoded Delivery frames cut their payload from it lazily
                return self._feed(src, n, data if not has_view else None)
        finally:
            self._busy = False
            if has_view:
                PyBuffer_Release(&view)

    cdef list _feed(self, const char *src, Py_ssize_t n, bytes whole):
        cdef const char *work
        cdef Py_ssize_t end, pos, start, want
        cdef uint64_t length
        cdef uint8_t opcode, flags
        cdef uint32_t request_id
        cdef list out
        cdef Frame frame
        if self._len:
            whole = None  # the frames are cut from our own (mutable) buffer
            self._reserve(self._len + n)
            memcpy(self._buf + self._len, src, <size_t>n)
            self._len += n
            if self._len < self._want:
                return []
            work = self._buf
            end = self._len
        else:
            work = src
            end = n
        pos = 0
        out = []
        want = 4
        try:
            while end - pos >= 4:
                length = fila_ld32(work + pos)
                if length > self._max_frame_size:
                    raise _failures.frame_too_large(length, self._max_frame_size)
                if <uint64_t>(end - pos - 4) < length:
                    want = 4 + <Py_ssize_t>length
                    break
                if length < <uint64_t>HEADER_SIZE:
                    raise _failures.body_too_short(length)
                opcode = <uint8_t>work[pos + 4]
                flags = <uint8_t>work[pos + 5]
                request_id = fila_ld32(work + pos + 6)
                start = pos + FRAME_OVERHEAD
                pos += 4 + <Py_ssize_t>length
                if self._reassemble and (flags & FLAG_CONTINUATION or self._streams):
                    joined = self._join(opcode, flags, request_id, PyBytes_FromStringAndSize_raw(work + start, pos - start))
                    if joined is not None:
                        out.append(joined)
                    continue
                if self._decode and opcode == OP_DELIVERY:
                    if whole is None:
                        frame = _new_frame(opcode, flags, request_id, PyBytes_FromStringAndSize_raw(work + start, pos - start))
                    else:
                        frame = _new_frame(opcode, flags, request_id, None)
                        frame._src = whole
                        frame._start = start
                        frame._end = pos
                    frame._messages = _decode_delivery(work + start, pos - start, &self._cache)
                else:
                    frame = _new_frame(opcode, flags, request_id, PyBytes_FromStringAndSize_raw(work + start, pos - start))
                out.append(frame)
        except _errors.DecodeError as exc:
            self._failed = exc
            self._streams.clear()
            self._len = 0
            raise
        self._want = want
        self._keep(work + pos, end - pos)
        return out

    cdef object _join(self, uint8_t opcode, uint8_t flags, uint32_t request_id, bytes payload):
        cdef Frame frame
        streams = self._streams
        stream = streams.get(request_id)
        if stream is None:
            if not flags & FLAG_CONTINUATION:
                frame = _new_frame(opcode, flags, request_id, payload)
                self._decode_frame(frame)
                return frame
            if len(streams) >= self._max_pending_streams:
                raise _failures.too_many_streams(len(streams) + 1, self._max_pending_streams)
            size = len(payload)
            if size > self._max_reassembled_size:
                raise _failures.reassembled_too_large(request_id, size, self._max_reassembled_size)
            streams[request_id] = [opcode, [payload], size]
            return None
        if opcode != stream[0]:
            del streams[request_id]
            raise _failures.opcode_mismatch(request_id, stream[0], opcode)
        size = stream[2] + len(payload)
        if size > self._max_reassembled_size:
            del streams[request_id]
            raise _failures.reassembled_too_large(request_id, size, self._max_reassembled_size)
        stream[1].append(payload)
        stream[2] = size
        if flags & FLAG_CONTINUATION:
            return None
        del streams[request_id]
        frame = _new_frame(opcode, 0, request_id, b"".join(stream[1]))
        self._decode_frame(frame)
        return frame

    cdef int _decode_frame(self, Frame frame) except -1:
        cdef bytes body
        if self._decode and frame._opcode == OP_DELIVERY:
            body = frame._payload
            frame._messages = _decode_delivery(PyBytes_AS_STRING_raw(body), PyBytes_GET_SIZE(body), &self._cache)
        return 0


# ------------------------------------------------------------------ encoders

ctypedef struct wr_t:
    char *p
    char *end


cdef int _changed() except -1:
    raise RuntimeError("a value changed while it was being encoded (shared with another thread?)")


cdef inline int _put(wr_t *w, const char *src, Py_ssize_t n) except -1:
    if w.end - w.p < n:
        return _changed()
    memcpy(w.p, src, <size_t>n)
    w.p += n
    return 0


cdef inline int _put_str(wr_t *w, const char *src, Py_ssize_t n) except -1:
    if w.end - w.p < n + 2:
        return _changed()
    fila_st16(w.p, <uint16_t>n)
    fila_copy(w.p + 2, src, n)
    w.p += n + 2
    return 0


cdef inline int _put_u32(wr_t *w, uint32_t v) except -1:
    if w.end - w.p < 4:
        return _changed()
    fila_st32(w.p, v)
    w.p += 4
    return 0


cdef inline const char *_utf8(object value, object what, Py_ssize_t *size) except NULL:
    """The UTF-8 of a str field (validated like the pure twin's ``_str_bytes``)."""
    cdef Py_ssize_t n
    if PyUnicode_Check(value) and PyUnicode_IS_COMPACT_ASCII(value):
        n = PyUnicode_GET_LENGTH(value)
        if n <= <Py_ssize_t>MAX_U16:
            size[0] = n
            return fila_ascii_data(value)
    return _utf8_slow(value, what, size)


cdef const char *_utf8_slow(object value, object what, Py_ssize_t *size) except NULL:
    cdef const char *p
    if not PyUnicode_Check(value):
        raise _failures.not_str(what, value)
    if PyUnicode_IS_COMPACT_ASCII(value):
        size[0] = PyUnicode_GET_LENGTH(value)
        p = fila_ascii_data(value)
    else:
        try:
            p = PyUnicode_AsUTF8AndSize(value, size)
        except UnicodeEncodeError:
            raise _failures.not_utf8(what) from None
    if size[0] > <Py_ssize_t>MAX_U16:
        raise _failures.string_too_long(what, size[0])
    return p


cdef uint32_t _request_id(object request_id) except? 0:
    cdef int overflow = 0
    cdef long long v
    if PyLong_Check(request_id):
        v = PyLong_AsLongLongAndOverflow(request_id, &overflow)
        if not overflow and 0 <= v <= <long long>MAX_U32:
            return <uint32_t>v
    raise _failures.bad_int("request_id", request_id, MAX_U32)


cdef tuple _items(object items, str what):
    """A snapshot of ``items`` (a list or tuple), like the pure twin's ``_items``."""
    cdef tuple seq
    if PyTuple_CheckExact(items):
        seq = items
    elif PyList_CheckExact(items):
        seq = PyList_AsTuple(items)
    elif PyList_Check(items) or PyTuple_Check(items):
        seq = tuple(items)
    else:
        raise _failures.not_sequence(what, items)
    if <uint64_t>PyTuple_GET_SIZE(seq) > MAX_U32:
        raise _failures.too_many_entries(what, PyTuple_GET_SIZE(seq), MAX_U32)
    return seq


cdef tuple _item(object item, str what, Py_ssize_t index, Py_ssize_t width):
    """An item that is not an exact tuple of ``width``: a tuple copy, or the error."""
    if not (PyTuple_Check(item) or PyList_Check(item)) or len(item) != width:
        raise _failures.bad_item(what, index, width, item)
    return tuple(item)


cdef bytes _wire(uint8_t opcode, uint32_t request_id, Py_ssize_t size, object max_frame_size,
                 char **body, Py_ssize_t *limit):
    """Allocate the wire bytes for a ``size``-byte payload; ``body`` receives
    where the payload goes. A body over ``max_frame_size - 6`` bytes is written
    contiguously after room for every frame header, then cut by ``_split``."""
    cdef Py_ssize_t frames
    cdef char *p
    limit[0] = <Py_ssize_t>(<uint64_t>_check_max_frame_size(max_frame_size)) - HEADER_SIZE
    if size <= limit[0]:
        out = PyBytes_FromStringAndSize_raw(NULL, size + FRAME_OVERHEAD)
        p = PyBytes_AS_STRING_raw(out)
        fila_st32(p, <uint32_t>(size + HEADER_SIZE))
        p[4] = <char>opcode
        p[5] = 0
        fila_st32(p + 6, request_id)
        body[0] = p + FRAME_OVERHEAD
        return out
    frames = (size + limit[0] - 1) // limit[0]
    out = PyBytes_FromStringAndSize_raw(NULL, size + frames * FRAME_OVERHEAD)
    body[0] = PyBytes_AS_STRING_raw(out) + frames * FRAME_OVERHEAD
    return out


cdef void _split(bytes out, uint8_t opcode, uint32_t request_id, Py_ssize_t size, Py_ssize_t limit) noexcept:
    """Cut the contiguous body into continuation frames in place, as the pure
    twin's ``_split`` does: chunks of ``limit`` bytes, the flag on all but the
    last. Chunk k moves down to just after its header; it never overlaps a
    chunk not yet moved."""
    cdef Py_ssize_t frames, k, chunk, start
    cdef char *base
    cdef char *dst
    if size <= limit:
        return
    frames = (size + limit - 1) // limit
    base = PyBytes_AS_STRING_raw(out)
    for k in range(frames):
        start = k * limit
        chunk = limit if size - start > limit else size - start
        dst = base + k * (limit + FRAME_OVERHEAD)
        fila_st32(dst, <uint32_t>(chunk + HEADER_SIZE))
        dst[4] = <char>opcode
        dst[5] = <char>(FLAG_CONTINUATION if k + 1 < frames else 0)
        fila_st32(dst + 6, request_id)
        memmove(dst + FRAME_OVERHEAD, base + frames * FRAME_OVERHEAD + start, <size_t>chunk)


# Enqueue is encoded in one walk over the messages: everything but the
# payloads is written to a scratch buffer (validating as it goes), then the
# frame is sized, allocated once, and filled from the scratch spans and the
# payloads (each payload is copied exactly once).

cdef enum:
    SCRATCH_STACK = 4096
    MARKS_STACK = 256

ctypedef struct scratch_t:
    char *buf
    Py_ssize_t len
    Py_ssize_t cap
    bint heap


cdef int _scratch_grow(scratch_t *s, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = s.cap * 2
    cdef char *p
    if cap < s.len + need:
        cap = s.len + need
    if s.heap:
        p = <char *>PyMem_Realloc(s.buf, <size_t>cap)
    else:
        p = <char *>PyMem_Malloc(<size_t>cap)
        if p != NULL:
            memcpy(p, s.buf, <size_t>s.len)
    if p == NULL:
        raise MemoryError()
    s.buf = p
    s.cap = cap
    s.heap = True
    return 0


cdef inline int _scratch_str(scratch_t *s, object value, object what) except -1:
    cdef Py_ssize_t n
    cdef const char *p = _utf8(value, what, &n)
    if s.cap - s.len < n + 2:
        _scratch_grow(s, n + 2)
    fila_st16(s.buf + s.len, <uint16_t>n)
    fila_copy(s.buf + s.len + 2, p, n)
    s.len += n + 2
    return 0


cdef int _scratch_map(scratch_t *s, object headers) except -1:
    """Validate a dict of str to str and write it."""
    cdef PyObject *kp
    cdef PyObject *vp
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t count
    with cython.critical_section(headers):
        count = PyDict_Size(headers)
        if <uint64_t>count > MAX_U16:
            raise _failures.too_many_entries("Enqueue.headers", count, MAX_U16)
        if s.cap - s.len < 2:
            _scratch_grow(s, 2)
        fila_st16(s.buf + s.len, <uint16_t>count)
        s.len += 2
        while PyDict_Next(headers, &i, &kp, &vp):
            _scratch_str(s, <object>kp, "Enqueue.headers key")
            _scratch_str(s, <object>vp, "Enqueue.headers value")
    return 0


def encode_enqueue(request_id, messages, max_frame_size=MAX_FRAME_SIZE):
    """Enqueue frame(s) for ``messages``: ``(queue, headers_or_None, payload)`` each."""
    cdef uint32_t rid = _request_id(request_id)
    cdef Py_ssize_t count, i, n, limit, size, prev, payloads = 0
    cdef char *body
    cdef wr_t w
    cdef Py_buffer view
    cdef list fixed = None
    cdef tuple items = _items(messages, "Enqueue.messages")
    cdef tuple item
    cdef char stack_buf[SCRATCH_STACK]
    cdef Py_ssize_t stack_marks[MARKS_STACK]
    cdef Py_ssize_t *marks = stack_marks  # where each payload goes, in the scratch
    cdef scratch_t s
    count = PyTuple_GET_SIZE(items)
    s.buf = stack_buf
    s.cap = SCRATCH_STACK
    s.heap = False
    fila_st32(s.buf, <uint32_t>count)
    s.len = 4
    try:
        if count > MARKS_STACK:
            marks = <Py_ssize_t *>PyMem_Malloc(<size_t>count * sizeof(Py_ssize_t))
            if marks == NULL:
                raise MemoryError()
        # pass 1: validate, write all but the payloads, size the frame
        for i in range(count):
            obj = <object>PyTuple_GET_ITEM(items, i)
            if PyTuple_CheckExact(obj) and PyTuple_GET_SIZE(obj) == 3:
                item = <tuple>obj
            else:
                item = _item(obj, "Enqueue.messages", i, 3)
                if fixed is None:
                    fixed = list(items)
                fixed[i] = item
            _scratch_str(&s, <object>PyTuple_GET_ITEM(item, 0), "Enqueue.queue")
            headers = <object>PyTuple_GET_ITEM(item, 1)
            if headers is None:
                if s.cap - s.len < 2:
                    _scratch_grow(&s, 2)
                fila_st16(s.buf + s.len, 0)
                s.len += 2
            elif PyDict_CheckExact(headers):
                _scratch_map(&s, headers)
            else:
                # any other mapping, or the wrong type: the pure twin does the lot
                return _pure.encode_enqueue(request_id, messages, max_frame_size)
            payload = <object>PyTuple_GET_ITEM(item, 2)
            if PyBytes_Check(payload):
                n = PyBytes_GET_SIZE(payload)
            elif PyByteArray_Check(payload):
                n = PyByteArray_GET_SIZE(payload)
            elif PyMemoryView_Check(payload):
                if not payload.c_contiguous:
                    return _pure.encode_enqueue(request_id, messages, max_frame_size)
                n = payload.nbytes
            else:
                raise _failures.not_bytes_like("Enqueue.payload", payload)
            if <uint64_t>n > MAX_U32:
                raise _failures.bytes_too_long("Enqueue.payload", n)
            if s.cap - s.len < 4:
                _scratch_grow(&s, 4)
            fila_st32(s.buf + s.len, <uint32_t>n)
            s.len += 4
            marks[i] = s.len
            payloads += n
        if fixed is not None:
            items = tuple(fixed)
        size = s.len + payloads
        out = _wire(OP_ENQUEUE, rid, size, max_frame_size, &body, &limit)
        # pass 2: scratch spans and payloads; bounds-checked, so a payload
        # changed meanwhile cannot overflow
        w.p = body
        w.end = body + size
        prev = 0
        for i in range(count):
            _put(&w, s.buf + prev, marks[i] - prev)
            prev = marks[i]
            n = fila_ld32(s.buf + prev - 4)
            payload = <object>PyTuple_GET_ITEM(<tuple>PyTuple_GET_ITEM(items, i), 2)
            if PyBytes_CheckExact(payload):
                if PyBytes_GET_SIZE(payload) != n:
                    _changed()
                _put(&w, PyBytes_AS_STRING_raw(payload), n)
            else:
                if PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) != 0:
                    return _changed()
                try:
                    if view.len != n:
                        _changed()
                    _put(&w, <const char *>view.buf, n)
                finally:
                    PyBuffer_Release(&view)
        _put(&w, s.buf + prev, s.len - prev)
        if w.p != w.end:
            _changed()
        _split(out, OP_ENQUEUE, rid, size, limit)
        return out
    finally:
        if s.heap:
            PyMem_Free(s.buf)
        if marks != stack_marks:
            PyMem_Free(marks)


cdef bytes _encode_strings(uint8_t opcode, str what, tuple names, object request_id, object items_in,
                           Py_ssize_t width, object max_frame_size):
    cdef uint32_t rid = _request_id(request_id)
    cdef Py_ssize_t count, i, f, n, limit, size = 4
    cdef const char *p
    cdef char *body
    cdef wr_t w
    cdef list fixed = None
    cdef tuple items = _items(items_in, what)
    cdef tuple item
    count = PyTuple_GET_SIZE(items)
    for i in range(count):
        obj = <object>PyTuple_GET_ITEM(items, i)
        if PyTuple_CheckExact(obj) and PyTuple_GET_SIZE(obj) == width:
            item = <tuple>obj
        else:
            item = _item(obj, what, i, width)
            if fixed is None:
                fixed = list(items)
            fixed[i] = item
        for f in range(width):
            _utf8(<object>PyTuple_GET_ITEM(item, f), <object>PyTuple_GET_ITEM(names, f), &n)
            size += 2 + n
    if fixed is not None:
        items = tuple(fixed)
    out = _wire(opcode, rid, size, max_frame_size, &body, &limit)
    w.p = body
    w.end = body + size
    _put_u32(&w, <uint32_t>count)
    for i in range(count):
        item = <tuple>PyTuple_GET_ITEM(items, i)
        for f in range(width):
            p = _utf8(<object>PyTuple_GET_ITEM(item, f), <object>PyTuple_GET_ITEM(names, f), &n)
            _put_str(&w, p, n)
    if w.p != w.end:
        _changed()
    _split(out, opcode, rid, size, limit)
    return out


cdef tuple _ACK_NAMES = ("Ack.queue", "Ack.message_id")
cdef tuple _NACK_NAMES = ("Nack.queue", "Nack.message_id", "Nack.error")


def encode_ack(request_id, items, max_frame_size=MAX_FRAME_SIZE):
    """Ack frame(s) for ``items``: ``(queue, message_id)`` each."""
    return _encode_strings(OP_ACK, "Ack.items", _ACK_NAMES, request_id, items, 2, max_frame_size)


def encode_nack(request_id, items, max_frame_size=MAX_FRAME_SIZE):
    """Nack frame(s) for ``items``: ``(queue, message_id, error)`` each."""
    return _encode_strings(OP_NACK, "Nack.items", _NACK_NAMES, request_id, items, 3, max_frame_size)
