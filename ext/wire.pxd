# cython: language_level=3
#
# Contract for ext/wire.pyx: the ModelInfer wire codec.
#
# Two cursors over plain memory, after pgproto's frb.pxd:
#
# * WireReader walks a protobuf message. Every read is bounds-checked here,
#   inline, and an overrun raises InvalidArgument through wire_error() (the
#   one place that builds the message), so no caller can read past `end`.
#   `base` is the start of the whole request; it turns pointers into byte
#   offsets for error texts and for zero-copy slices of the request bytes.
# * WireWriter fills a preallocated bytes object. Sizes are computed first,
#   so the checks never fire unless a Python object changed between the
#   sizing and the filling pass; then we raise instead of writing past `end`.
#
# Pointers only ever come from `bytes` objects that the caller keeps alive
# (the request), or from a Py_buffer held until the write is done.
#
# setup.py compiles ext/wire.pyx as `triton_grpc_server._ext.wire`, and Cython
# looks for that module's .pxd at triton_grpc_server/_ext/wire.pxd, not here,
# so wire.pyx `include`s this file. Hence it holds only definitions that are
# also legal in a .pyx: no bodiless declarations. If the build ever makes
# Cython find this file by itself, drop the `include` from wire.pyx.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef enum WireType:
    WT_VARINT = 0
    WT_FIXED64 = 1
    WT_LEN = 2
    WT_START_GROUP = 3
    WT_END_GROUP = 4
    WT_FIXED32 = 5


cdef struct WireReader:
    const char *buf     # next unread byte
    const char *end     # one past the last byte of this (sub)message
    const char *base    # start of the whole request (for offsets)


cdef struct WireWriter:
    char *buf
    char *end


# Defined in wire.pyx (they build Python exceptions):
#   cdef int wire_error(const WireReader *r, str what) except -1
#       raises InvalidArgument("malformed ModelInferRequest: <what> at byte N")
#   cdef int writer_overflow() except -1
#       raises RuntimeError (a response object changed between the passes)


# ---------------------------------------------------------------- reading

cdef inline void wr_init(WireReader *r, const char *buf, Py_ssize_t n) noexcept nogil:
    r.buf = buf
    r.end = buf + n
    r.base = buf


cdef inline void wr_chunk(WireReader *r, const char *base, Py_ssize_t offset,
                          Py_ssize_t n) noexcept nogil:
    # A reader over the ``n`` bytes at ``base + offset`` of the request at ``base``.
    r.base = base
    r.buf = base + offset
    r.end = r.buf + n


cdef inline bint wr_more(const WireReader *r) noexcept nogil:
    return r.buf < r.end


cdef inline const char* wr_read(WireReader *r, Py_ssize_t n) except NULL:
    cdef const char *p = r.buf
    if n > r.end - r.buf:
        wire_error(r, "unexpected end of data")
        return NULL
    r.buf += n
    return p


cdef inline int wr_varint(WireReader *r, uint64_t *out) except -1:
    # Up to 10 bytes; bits past 64 in the tenth byte are dropped, as upb does.
    cdef const char *p = r.buf
    cdef Py_ssize_t avail = r.end - p
    cdef uint64_t b, v
    cdef int i
    if avail > 0 and <uint8_t>p[0] < 0x80:      # one-byte fast path
        out[0] = <uint8_t>p[0]
        r.buf = p + 1
        return 0
    v = 0
    for i in range(10):
        if i >= avail:
            return wire_error(r, "truncated varint")
        b = <uint8_t>p[i]
        v |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            out[0] = v
            r.buf = p + i + 1
            return 0
    return wire_error(r, "varint longer than 10 bytes")


cdef inline int wr_tag(WireReader *r, uint32_t *field, uint32_t *wt) except -1:
    # A tag is a 32-bit varint: upb refuses one longer than 5 bytes even when
    # the extra bytes only pad it (a value varint may run to 10).
    cdef uint64_t tag = 0
    cdef const char *start = r.buf
    wr_varint(r, &tag)
    if tag > 0xFFFFFFFFu:
        return wire_error(r, "field tag wider than 32 bits")
    if r.buf - start > 5:
        return wire_error(r, "field tag longer than 5 bytes")
    if (tag >> 3) == 0:
        return wire_error(r, "field number 0")
    field[0] = <uint32_t>(tag >> 3)
    wt[0] = <uint32_t>(tag & 7)
    return 0


cdef inline Py_ssize_t wr_len(WireReader *r) except -1:
    # Length prefix of a length-delimited field, checked against what is left.
    cdef uint64_t n = 0
    wr_varint(r, &n)
    if n > <uint64_t>(r.end - r.buf):
        return wire_error(r, "length past end of message")
    return <Py_ssize_t>n


cdef inline int wr_sub(WireReader *r, WireReader *sub) except -1:
    # Carve the next length-delimited field out as its own reader.
    cdef Py_ssize_t n = wr_len(r)
    sub.buf = r.buf
    sub.end = r.buf + n
    sub.base = r.base
    r.buf += n
    return 0


cdef inline uint64_t load_le64(const char *p) noexcept nogil:
    cdef const uint8_t *u = <const uint8_t *>p
    return (<uint64_t>u[0] | (<uint64_t>u[1] << 8) | (<uint64_t>u[2] << 16)
            | (<uint64_t>u[3] << 24) | (<uint64_t>u[4] << 32) | (<uint64_t>u[5] << 40)
            | (<uint64_t>u[6] << 48) | (<uint64_t>u[7] << 56))


# ---------------------------------------------------------------- writing

cdef inline int varint_size(uint64_t v) noexcept nogil:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline int ww_varint(WireWriter *w, uint64_t v) except -1:
    if w.end - w.buf < 10 and w.end - w.buf < varint_size(v):
        return writer_overflow()
    while v >= 0x80:
        w.buf[0] = <char>((v & 0x7F) | 0x80)
        w.buf += 1
        v >>= 7
    w.buf[0] = <char>v
    w.buf += 1
    return 0


cdef inline int ww_byte(WireWriter *w, uint8_t b) except -1:
    if w.buf >= w.end:
        return writer_overflow()
    w.buf[0] = <char>b
    w.buf += 1
    return 0


cdef inline int ww_raw(WireWriter *w, const char *p, Py_ssize_t n) except -1:
    if n > w.end - w.buf:
        return writer_overflow()
    if n >= 65536:          # large tensors: let other threads run meanwhile
        with nogil:
            memcpy(w.buf, p, <size_t>n)
    elif n > 0:
        memcpy(w.buf, p, <size_t>n)
    w.buf += n
    return 0


# ---------------------------------------------------------------- module API
#
#   def decode_request(data) -> InferRequest      (raises InvalidArgument)
#   def encode_response(response) -> bytes
#
# (see wire.pyi for the Python-facing types)
