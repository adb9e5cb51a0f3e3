# cython: language_level=3
"""The ModelInfer hot path: protobuf wire bytes <-> InferRequest/InferResponse.

Decoding walks the request bytes with the bounds-checked WireReader from
``wire.pxd`` and builds the request objects directly, with no protobuf
objects in between. They are extension types defined here, the one request
and response type of the server (``_ext/wire.pyi`` is their contract). It follows the decoding
contract in ``frontends/protobuf_codec.py`` (the reference) and protobuf's
parsing rules, except that it is stricter on input a Triton client never
sends: a known field with the wrong wire type, and groups, are errors here,
where protobuf would keep them as unknown fields.

Encoding sizes the whole ModelInferResponse first, allocates one ``bytes``
and fills it, copying each output tensor exactly once.
"""
include "wire.pxd"

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bool cimport PyBool_Check
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport (PyLong_AsLongLong, PyLong_AsUnsignedLongLong, PyLong_Check,
                           PyLong_FromLongLong, PyLong_FromUnsignedLongLong)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cimport numpy as cnp

import numpy as np

from triton_grpc_server.errors import InvalidArgument

cnp.import_array()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL


# Numpy dtypes of the InferTensorContents fields, by field number. Varint
# fields are decoded into native arrays; fp32/fp64 are little-endian on the
# wire and, when sent as one packed run, viewed in place.
cdef tuple CONTENT_NAMES = (None, "bool_contents", "int_contents", "int64_contents",
                            "uint_contents", "uint64_contents", "fp32_contents",
                            "fp64_contents", "bytes_contents")
cdef tuple CONTENT_DTYPES = (None, np.dtype(np.bool_), np.dtype(np.int32), np.dtype(np.int64),
                             np.dtype(np.uint32), np.dtype(np.uint64), np.dtype("<f4"),
                             np.dtype("<f8"), None)
cdef object _UNSET = object()     # "no parameter_choice seen yet"
cdef enum:
    CONTENT_SLOTS = 9                # InferTensorContents fields are 1..8


cdef int wire_error(const WireReader *r, str what) except -1:
    raise InvalidArgument(f"malformed ModelInferRequest: {what} at byte {r.buf - r.base}")


cdef int writer_overflow() except -1:
    raise RuntimeError("encode_response: the response changed while it was being encoded")


# ================================================================ request classes
#
# The one request type of the server: the Cython codec builds it here, the
# protobuf codec and the HTTP frontend construct it with keywords. As
# extension types they are created without a Python-level __init__ on the
# hot path, which is most of the cost of a small request.

cdef class InferInput:
    """One input tensor of a request: metadata plus, if given, typed ``contents``."""
    cdef public object name, datatype, shape, parameters, contents

    def __init__(self, name, datatype, shape, parameters=None, contents=None):
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.parameters = parameters if parameters is not None else {}
        self.contents = contents

    def __repr__(self):
        return (f"InferInput(name={self.name!r}, datatype={self.datatype!r}, "
                f"shape={self.shape!r})")


cdef class RequestedOutput:
    """One requested output."""
    cdef public object name, parameters

    def __init__(self, name, parameters=None):
        self.name = name
        self.parameters = parameters if parameters is not None else {}

    def __repr__(self):
        return f"RequestedOutput(name={self.name!r})"


cdef class InferRequest:
    """A transport-free inference request with the sender its answers go to.

    ``cancel()`` is called by the transport when the client goes; it sets
    ``cancelled`` and runs the callbacks registered with
    ``add_cancel_callback`` once (a callback added after that runs at once).
    The flag and the callback list change only under the GIL with no Python
    code in between, so a cancel racing a registration runs the callback
    exactly once.
    """
    cdef public object model_name, model_version, id, parameters, inputs, outputs
    cdef public object raw_input_contents, sender
    cdef readonly bint cancelled
    cdef object _cancel_callbacks

    def __init__(self, model_name="", model_version="", id="", parameters=None,
                 inputs=None, outputs=None, raw_input_contents=None, sender=None):
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.parameters = parameters if parameters is not None else {}
        self.inputs = inputs if inputs is not None else []
        self.outputs = outputs if outputs is not None else []
        self.raw_input_contents = raw_input_contents if raw_input_contents is not None else []
        self.sender = sender

    def cancel(self):
        """Flag the request cancelled and run its cancel callbacks (once)."""
        if self.cancelled:
            return
        self.cancelled = True
        callbacks = self._cancel_callbacks
        self._cancel_callbacks = None
        if callbacks is not None:
            for callback in callbacks:
                callback()

    def add_cancel_callback(self, callback):
        """``callback()`` runs once when the request is cancelled (now, if it already is)."""
        if self.cancelled:
            callback()
            return
        if self._cancel_callbacks is None:
            self._cancel_callbacks = [callback]
        else:
            self._cancel_callbacks.append(callback)

    def clear_cancel_callbacks(self):
        """Forget the callbacks (the request is answered; they would find nothing to drop)."""
        self._cancel_callbacks = None

    def __repr__(self):
        return (f"InferRequest(model_name={self.model_name!r}, "
                f"model_version={self.model_version!r}, id={self.id!r}, "
                f"inputs={self.inputs!r}, outputs={self.outputs!r})")


cdef class OutputTensor:
    """One output: metadata plus its raw bytes as any buffer-protocol object.

    ``data`` is a C-contiguous numpy array for fixed-size types, or ``bytes``
    already serialized in Triton's BYTES layout (4-byte LE length prefixes).
    """
    cdef public object name, datatype, shape, data, parameters

    def __init__(self, name, datatype, shape, data, parameters=None):
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.data = data
        self.parameters = parameters if parameters is not None else {}

    def __repr__(self):
        return (f"OutputTensor(name={self.name!r}, datatype={self.datatype!r}, "
                f"shape={self.shape!r})")


cdef class InferResponse:
    """One response to an ``InferRequest`` (a decoupled model sends several)."""
    cdef public object model_name, model_version, id, outputs, parameters

    def __init__(self, model_name, model_version, id="", outputs=None, parameters=None):
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.outputs = outputs if outputs is not None else []
        self.parameters = parameters if parameters is not None else {}

    def __repr__(self):
        return (f"InferResponse(model_name={self.model_name!r}, "
                f"model_version={self.model_version!r}, id={self.id!r}, "
                f"outputs={self.outputs!r})")


# ================================================================ decoding

cdef inline int expect_wt(WireReader *r, uint32_t wt, uint32_t want, str field) except -1:
    if wt != want:
        return wire_error(r, f"wire type {wt} for field '{field}' (expected {want})")
    return 0


cdef int skip_field(WireReader *r, uint32_t wt) except -1:
    # Unknown fields are skipped the way protobuf skips them; groups are
    # deprecated proto2 syntax that no Triton message uses, so they are errors.
    cdef uint64_t ignored = 0
    if wt == WT_VARINT:
        wr_varint(r, &ignored)
    elif wt == WT_FIXED64:
        wr_read(r, 8)
    elif wt == WT_LEN:
        wr_read(r, wr_len(r))
    elif wt == WT_FIXED32:
        wr_read(r, 4)
    elif wt == WT_START_GROUP or wt == WT_END_GROUP:
        return wire_error(r, "group fields are not supported")
    else:
        return wire_error(r, f"invalid wire type {wt}")
    return 0


cdef inline str read_string(WireReader *r, uint32_t wt, str field):
    cdef Py_ssize_t n
    cdef const char *p
    expect_wt(r, wt, WT_LEN, field)
    n = wr_len(r)
    p = wr_read(r, n)
    if n == 0:
        return ""
    try:
        return PyUnicode_DecodeUTF8(p, n, NULL)
    except UnicodeDecodeError:
        r.buf = p
        wire_error(r, f"invalid UTF-8 in string field '{field}'")


cdef object decode_parameter(WireReader *r, object value):
    # One InferParameter, merged into `value` (protobuf merges a repeated
    # message field; within the oneof the last choice seen wins).
    cdef uint32_t field = 0, wt = 0
    cdef uint64_t v = 0
    cdef const char *p
    cdef double d
    while wr_more(r):
        wr_tag(r, &field, &wt)
        if field == 1:
            expect_wt(r, wt, WT_VARINT, "bool_param")
            wr_varint(r, &v)
            value = v != 0
        elif field == 2:
            expect_wt(r, wt, WT_VARINT, "int64_param")
            wr_varint(r, &v)
            value = PyLong_FromLongLong(<int64_t>v)
        elif field == 3:
            value = read_string(r, wt, "string_param")
        elif field == 4:
            expect_wt(r, wt, WT_FIXED64, "double_param")
            p = wr_read(r, 8)
            v = load_le64(p)
            memcpy(&d, &v, 8)
            value = d
        elif field == 5:
            expect_wt(r, wt, WT_VARINT, "uint64_param")
            wr_varint(r, &v)
            value = PyLong_FromUnsignedLongLong(v)
        else:
            skip_field(r, wt)
    return value


cdef int decode_parameter_entry(WireReader *r, uint32_t wt, dict params) except -1:
    # One map<string, InferParameter> entry. As in upb, a later entry for the
    # same key replaces the earlier one, and an entry carrying unknown fields
    # of its own is set aside (kept as an unknown field), not applied.
    cdef WireReader sub, vsub
    cdef uint32_t field = 0, ewt = 0
    cdef bint unknown = False
    cdef str key = ""
    cdef object value = _UNSET
    expect_wt(r, wt, WT_LEN, "parameters")
    wr_sub(r, &sub)
    while wr_more(&sub):
        wr_tag(&sub, &field, &ewt)
        if field == 1:
            key = read_string(&sub, ewt, "parameters.key")
        elif field == 2:
            expect_wt(&sub, ewt, WT_LEN, "parameters.value")
            wr_sub(&sub, &vsub)
            value = decode_parameter(&vsub, value)
        else:
            skip_field(&sub, ewt)
            unknown = True
    if unknown:
        return 0
    if value is _UNSET:
        params.pop(key, None)          # present but with no value: dropped
    else:
        params[key] = value
    return 0


cdef inline int read_int64s(WireReader *r, uint32_t wt, list out, str field) except -1:
    # repeated int64, packed or not (protobuf accepts both, even mixed).
    cdef WireReader sub
    cdef uint64_t v = 0
    if wt == WT_VARINT:
        wr_varint(r, &v)
        out.append(<int64_t>v)
    elif wt == WT_LEN:
        wr_sub(r, &sub)
        while wr_more(&sub):
            wr_varint(&sub, &v)
            out.append(<int64_t>v)
    else:
        expect_wt(r, wt, WT_VARINT, field)
    return 0


cdef Py_ssize_t count_varints(WireReader *r, const char *p, Py_ssize_t n) except -1:
    # Number of varints in a packed run, which must end on a varint boundary.
    cdef Py_ssize_t i, count = 0, run = 0
    for i in range(n):
        if <uint8_t>p[i] < 0x80:
            count += 1
            run = 0
        else:
            run += 1
            if run == 10:
                r.buf = p + i
                return wire_error(r, "varint longer than 10 bytes")
    if run:
        r.buf = p + n
        return wire_error(r, "truncated varint in packed field")
    return count


cdef inline int store_varint(char *data, Py_ssize_t i, uint32_t field, uint64_t v) noexcept:
    if field == 1:
        (<uint8_t *>data)[i] = v != 0
    elif field == 2:
        (<int32_t *>data)[i] = <int32_t>v
    elif field == 3:
        (<int64_t *>data)[i] = <int64_t>v
    elif field == 4:
        (<uint32_t *>data)[i] = <uint32_t>v
    else:
        (<uint64_t *>data)[i] = v
    return 0


cdef object decode_contents(list chunks, object src, const char *base):
    # InferTensorContents, possibly sent in several chunks (protobuf merges
    # them, appending repeated fields). Pass 1 validates and counts, pass 2
    # allocates each array once and fills it.
    cdef WireReader r, sub
    cdef uint32_t field = 0, wt = 0
    cdef uint64_t v = 0
    cdef Py_ssize_t counts[CONTENT_SLOTS]
    cdef Py_ssize_t nseg[CONTENT_SLOTS]
    cdef Py_ssize_t fill[CONTENT_SLOTS]
    cdef char *data[CONTENT_SLOTS]
    cdef const char *seg[CONTENT_SLOTS]
    cdef Py_ssize_t n, k, i, width
    cdef const char *p
    cdef dict out = {}
    cdef list strings = None
    memset(counts, 0, sizeof(counts))
    memset(nseg, 0, sizeof(nseg))
    memset(fill, 0, sizeof(fill))
    for i in range(CONTENT_SLOTS):
        seg[i] = NULL
        data[i] = NULL

    for k in range(0, len(chunks), 2):
        wr_chunk(&r, base, <Py_ssize_t>chunks[k], <Py_ssize_t>chunks[k + 1])
        while wr_more(&r):
            wr_tag(&r, &field, &wt)
            if 1 <= field <= 5:
                if wt == WT_VARINT:
                    wr_varint(&r, &v)
                    counts[field] += 1
                else:
                    expect_wt(&r, wt, WT_LEN, CONTENT_NAMES[field])
                    n = wr_len(&r)
                    p = wr_read(&r, n)
                    counts[field] += count_varints(&r, p, n)
            elif field == 6 or field == 7:
                width = 4 if field == 6 else 8
                nseg[field] += 1
                if wt == WT_LEN:
                    n = wr_len(&r)
                    if n % width:
                        return wire_error(&r, f"packed {CONTENT_NAMES[field]} length {n} "
                                              f"is not a multiple of {width}")
                    seg[field] = wr_read(&r, n)
                    counts[field] += n // width
                else:
                    expect_wt(&r, wt, WT_FIXED32 if field == 6 else WT_FIXED64,
                              CONTENT_NAMES[field])
                    wr_read(&r, width)
                    seg[field] = NULL
                    counts[field] += 1
            elif field == 8:
                expect_wt(&r, wt, WT_LEN, "bytes_contents")
                wr_read(&r, wr_len(&r))
                counts[8] += 1
            else:
                skip_field(&r, wt)

    # Allocate. One packed fp32/fp64 run becomes a read-only view of `src`.
    for i in range(1, CONTENT_SLOTS):
        if counts[i] == 0:
            continue
        if i == 8:
            strings = []
            out["bytes_contents"] = strings
        elif (i == 6 or i == 7) and nseg[i] == 1 and seg[i] != NULL:
            out[CONTENT_NAMES[i]] = np.frombuffer(src, CONTENT_DTYPES[i], counts[i],
                                                  seg[i] - base)
            counts[i] = 0           # nothing left to fill
        else:
            arr = np.empty(counts[i], CONTENT_DTYPES[i])
            data[i] = <char *>cnp.PyArray_DATA(<cnp.ndarray>arr)
            out[CONTENT_NAMES[i]] = arr
    if not (counts[1] or counts[2] or counts[3] or counts[4] or counts[5] or counts[6]
            or counts[7] or counts[8]):
        return out

    # Fill (the bytes were validated above; the reader still checks bounds).
    for k in range(0, len(chunks), 2):
        wr_chunk(&r, base, <Py_ssize_t>chunks[k], <Py_ssize_t>chunks[k + 1])
        while wr_more(&r):
            wr_tag(&r, &field, &wt)
            if 1 <= field <= 5:
                if wt == WT_VARINT:
                    wr_varint(&r, &v)
                    store_varint(data[field], fill[field], field, v)
                    fill[field] += 1
                else:
                    wr_sub(&r, &sub)
                    while wr_more(&sub):
                        wr_varint(&sub, &v)
                        store_varint(data[field], fill[field], field, v)
                        fill[field] += 1
            elif field == 6 or field == 7:
                width = 4 if field == 6 else 8
                n = wr_len(&r) if wt == WT_LEN else width
                p = wr_read(&r, n)
                if counts[field]:
                    memcpy(data[field] + fill[field] * width, p, <size_t>n)
                    fill[field] += n // width
            elif field == 8:
                n = wr_len(&r)
                p = wr_read(&r, n)
                strings.append(PyBytes_FromStringAndSize(p, n))
            else:
                skip_field(&r, wt)
    return out


cdef object decode_input(WireReader *r, uint32_t wt, object src):
    cdef WireReader sub, csub
    cdef uint32_t field = 0, fwt = 0
    cdef str name = "", datatype = ""
    cdef list shape = []
    cdef dict params = {}
    cdef list chunks = None
    expect_wt(r, wt, WT_LEN, "inputs")
    wr_sub(r, &sub)
    while wr_more(&sub):
        wr_tag(&sub, &field, &fwt)
        if field == 1:
            name = read_string(&sub, fwt, "inputs.name")
        elif field == 2:
            datatype = read_string(&sub, fwt, "inputs.datatype")
        elif field == 3:
            read_int64s(&sub, fwt, shape, "inputs.shape")
        elif field == 4:
            decode_parameter_entry(&sub, fwt, params)
        elif field == 5:
            expect_wt(&sub, fwt, WT_LEN, "inputs.contents")
            wr_sub(&sub, &csub)
            if chunks is None:
                chunks = []
            chunks.append(csub.buf - sub.base)
            chunks.append(csub.end - csub.buf)
        else:
            skip_field(&sub, fwt)
    cdef InferInput result = InferInput.__new__(InferInput)
    result.name = name
    result.datatype = datatype
    result.shape = shape
    result.parameters = params
    result.contents = None if chunks is None else decode_contents(chunks, src, sub.base)
    return result


cdef object decode_output(WireReader *r, uint32_t wt):
    cdef WireReader sub
    cdef uint32_t field = 0, fwt = 0
    cdef str name = ""
    cdef dict params = {}
    expect_wt(r, wt, WT_LEN, "outputs")
    wr_sub(r, &sub)
    while wr_more(&sub):
        wr_tag(&sub, &field, &fwt)
        if field == 1:
            name = read_string(&sub, fwt, "outputs.name")
        elif field == 2:
            decode_parameter_entry(&sub, fwt, params)
        else:
            skip_field(&sub, fwt)
    cdef RequestedOutput result = RequestedOutput.__new__(RequestedOutput)
    result.name = name
    result.parameters = params
    return result


cdef object decode_bytes(bytes src):
    cdef WireReader r
    cdef uint32_t field = 0, wt = 0
    cdef Py_ssize_t n, off
    cdef const char *p
    cdef str model_name = "", model_version = "", request_id = ""
    cdef dict params = {}
    cdef list inputs = [], outputs = [], raw = []
    cdef object view = None
    wr_init(&r, PyBytes_AS_STRING(src), PyBytes_GET_SIZE(src))
    while wr_more(&r):
        wr_tag(&r, &field, &wt)
        if field == 7:
            # raw_input_contents: zero-copy slices; each keeps `src` alive.
            expect_wt(&r, wt, WT_LEN, "raw_input_contents")
            n = wr_len(&r)
            p = wr_read(&r, n)
            if view is None:
                view = memoryview(src)
            off = p - r.base
            raw.append(view[off:off + n])
        elif field == 5:
            inputs.append(decode_input(&r, wt, src))
        elif field == 6:
            outputs.append(decode_output(&r, wt))
        elif field == 1:
            model_name = read_string(&r, wt, "model_name")
        elif field == 2:
            model_version = read_string(&r, wt, "model_version")
        elif field == 3:
            request_id = read_string(&r, wt, "id")
        elif field == 4:
            decode_parameter_entry(&r, wt, params)
        else:
            skip_field(&r, wt)
    cdef InferRequest result = InferRequest.__new__(InferRequest)
    result.model_name = model_name
    result.model_version = model_version
    result.id = request_id
    result.parameters = params
    result.inputs = inputs
    result.outputs = outputs
    result.raw_input_contents = raw
    return result


def decode_request(object data):
    """Parse ModelInferRequest wire bytes into an ``InferRequest``.

    Args:
        data: ``bytes`` (what grpcio hands a handler), or any object with the
            buffer protocol, which is copied once into ``bytes`` so that the
            zero-copy views below always look at immutable memory.

    Returns:
        An ``InferRequest`` whose ``raw_input_contents`` are ``memoryview``
        slices of the request bytes and whose input ``contents`` hold numpy
        arrays (fp32/fp64 sent packed are views of the request bytes) and, for
        ``bytes_contents``, a list of ``bytes``.

    Raises:
        InvalidArgument: the bytes are not a well-formed ModelInferRequest.
    """
    if not PyBytes_CheckExact(data):
        data = memoryview(data).tobytes()
    return decode_bytes(<bytes>data)


# ================================================================ encoding

cdef inline Py_ssize_t string_field_size(str s) except -1:
    cdef Py_ssize_t n
    PyUnicode_AsUTF8AndSize(s, &n)
    return 0 if n == 0 else 1 + varint_size(<uint64_t>n) + n


cdef inline int write_string_field(WireWriter *w, uint8_t tag, str s) except -1:
    cdef Py_ssize_t n
    cdef const char *p = PyUnicode_AsUTF8AndSize(s, &n)
    if n:
        ww_byte(w, tag)
        ww_varint(w, <uint64_t>n)
        ww_raw(w, p, n)
    return 0


cdef inline bint is_plain_value(object v) noexcept:
    return PyBool_Check(v) or PyLong_Check(v) or PyFloat_Check(v) or type(v) is str


cdef dict plain_parameters(object params):
    # fill_parameters() in the reference stores anything that is not
    # bool/int/float as string_param str(value); do that conversion once.
    cdef dict d = params if type(params) is dict else dict(params)
    for v in d.values():
        if not is_plain_value(v):
            break
    else:
        return d
    return {k: (v if is_plain_value(v) else str(v)) for k, v in d.items()}


cdef Py_ssize_t parameter_value_size(object v) except -1:
    cdef long long i
    cdef Py_ssize_t n
    if PyBool_Check(v):
        return 2
    if PyLong_Check(v):
        if v > 0x7FFFFFFFFFFFFFFF:
            return 1 + varint_size(PyLong_AsUnsignedLongLong(v))
        i = PyLong_AsLongLong(v)
        return 1 + varint_size(<uint64_t>i)
    if PyFloat_Check(v):
        return 9
    PyUnicode_AsUTF8AndSize(v, &n)        # string_param, set even when empty
    return 1 + varint_size(<uint64_t>n) + n


cdef int write_parameter_value(WireWriter *w, object v) except -1:
    cdef double d
    cdef uint64_t bits
    cdef int i
    cdef Py_ssize_t n
    cdef const char *p
    if PyBool_Check(v):
        ww_byte(w, 0x08)
        ww_byte(w, 1 if v is True else 0)
    elif PyLong_Check(v):
        if v > 0x7FFFFFFFFFFFFFFF:
            ww_byte(w, 0x28)
            ww_varint(w, PyLong_AsUnsignedLongLong(v))
        else:
            ww_byte(w, 0x10)
            ww_varint(w, <uint64_t>PyLong_AsLongLong(v))
    elif PyFloat_Check(v):
        d = PyFloat_AS_DOUBLE(v)
        memcpy(&bits, &d, 8)
        ww_byte(w, 0x21)
        if w.end - w.buf < 8:
            return writer_overflow()
        for i in range(8):
            w.buf[i] = <char>((bits >> (8 * i)) & 0xFF)
        w.buf += 8
    else:
        # string_param is set even when empty: a oneof member has presence.
        p = PyUnicode_AsUTF8AndSize(v, &n)
        ww_byte(w, 0x1A)
        ww_varint(w, <uint64_t>n)
        ww_raw(w, p, n)
    return 0


cdef inline Py_ssize_t entry_body_size(object key, object value) except -1:
    cdef Py_ssize_t klen, vlen
    if type(key) is not str:
        raise TypeError(f"parameter names must be str, not {type(key).__name__}")
    PyUnicode_AsUTF8AndSize(key, &klen)
    vlen = parameter_value_size(value)
    return 1 + varint_size(<uint64_t>klen) + klen + 1 + varint_size(<uint64_t>vlen) + vlen


cdef Py_ssize_t parameters_size(dict params) except -1:
    cdef Py_ssize_t total = 0, body
    for key, value in params.items():
        body = entry_body_size(key, value)
        total += 1 + varint_size(<uint64_t>body) + body
    return total


cdef int write_parameters(WireWriter *w, uint8_t tag, dict params) except -1:
    cdef Py_ssize_t body, klen
    cdef const char *k
    for key, value in params.items():
        body = entry_body_size(key, value)
        ww_byte(w, tag)
        ww_varint(w, <uint64_t>body)
        k = PyUnicode_AsUTF8AndSize(key, &klen)
        ww_byte(w, 0x0A)
        ww_varint(w, <uint64_t>klen)
        ww_raw(w, k, klen)
        ww_byte(w, 0x12)
        ww_varint(w, <uint64_t>parameter_value_size(value))
        write_parameter_value(w, value)
    return 0


cdef Py_ssize_t shape_size(tuple shape) except -1:
    cdef Py_ssize_t n = 0
    for dim in shape:
        n += varint_size(<uint64_t>PyLong_AsLongLong(dim))
    return n


cdef Py_ssize_t output_size(tuple meta) except -1:
    # meta = (name, datatype, shape tuple, parameters dict)
    cdef Py_ssize_t n, packed
    n = string_field_size(<str>meta[0]) + string_field_size(<str>meta[1])
    packed = shape_size(<tuple>meta[2])
    if packed:
        n += 1 + varint_size(<uint64_t>packed) + packed
    return n + parameters_size(<dict>meta[3])


cdef int write_output(WireWriter *w, tuple meta) except -1:
    cdef Py_ssize_t packed
    write_string_field(w, 0x0A, <str>meta[0])
    write_string_field(w, 0x12, <str>meta[1])
    packed = shape_size(<tuple>meta[2])
    if packed:
        ww_byte(w, 0x1A)
        ww_varint(w, <uint64_t>packed)
        for dim in <tuple>meta[2]:
            ww_varint(w, <uint64_t>PyLong_AsLongLong(dim))
    write_parameters(w, 0x22, <dict>meta[3])
    return 0


cdef int get_contiguous_buffer(object data, Py_buffer *view, list keep) except -1:
    # Every output goes out as its raw bytes. Non-contiguous arrays and views
    # are first made contiguous (one extra copy, only for them).
    if cnp.PyArray_Check(data):
        if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>data):
            data = np.ascontiguousarray(data)
            keep.append(data)
    elif not PyBytes_CheckExact(data):
        try:
            PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
            return 0
        except (BufferError, ValueError):     # a strided memoryview, for one
            data = memoryview(data).tobytes()
            keep.append(data)
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    return 0


def encode_response(object response):
    """Serialize an ``InferResponse`` as ModelInferResponse wire bytes.

    Args:
        response: an ``InferResponse`` (or any object with its attributes);
            each output's ``data`` is any buffer-protocol object and is sent
            as raw bytes in ``raw_output_contents``.

    Returns:
        The serialized message, built in one ``bytes`` object.
    """
    return encode_message(response, None)


def encode_stream_response(object response, str error_message=""):
    """Serialize a ModelStreamInferResponse: ``error_message`` and/or ``infer_response``.

    ``response`` may be ``None`` (an error with nothing else to say). Built in
    one ``bytes`` object, like :func:`encode_response`.
    """
    return encode_message(response, error_message)


cdef bytes encode_message(object response, str error_message):
    # error_message is None: a bare ModelInferResponse. Otherwise the
    # ModelStreamInferResponse wrapping it (field 1 error_message, field 2
    # infer_response), sized and filled in the same single pass.
    cdef bint stream = error_message is not None
    cdef Py_ssize_t error_size = string_field_size(error_message) if stream else 0
    cdef bytes result
    cdef WireWriter w
    if response is None:
        result = PyBytes_FromStringAndSize(NULL, error_size)
        w.buf = PyBytes_AS_STRING(result)
        w.end = w.buf + error_size
        write_string_field(&w, 0x0A, error_message)
        if w.buf != w.end:
            writer_overflow()
        return result

    cdef str model_name = response.model_name
    cdef str model_version = response.model_version
    cdef str request_id = response.id
    cdef dict params = plain_parameters(response.parameters)
    cdef list outputs = list(response.outputs)
    cdef Py_ssize_t n_out = len(outputs)
    cdef list metas = []
    cdef list keep = []
    cdef Py_buffer *views = NULL
    cdef Py_ssize_t held = 0, i, body, total, size

    if n_out:
        views = <Py_buffer *>PyMem_Malloc(n_out * sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
    try:
        body = (string_field_size(model_name) + string_field_size(model_version)
                + string_field_size(request_id) + parameters_size(params))
        for out in outputs:
            meta = (<str>out.name, <str>out.datatype, tuple(out.shape),
                    plain_parameters(out.parameters))
            metas.append(meta)
            size = output_size(meta)
            body += 1 + varint_size(<uint64_t>size) + size
        for i in range(n_out):
            get_contiguous_buffer(outputs[i].data, &views[i], keep)
            held += 1
            body += 1 + varint_size(<uint64_t>views[i].len) + views[i].len

        total = body
        if stream:
            total = error_size + 1 + varint_size(<uint64_t>body) + body
        result = PyBytes_FromStringAndSize(NULL, total)
        w.buf = PyBytes_AS_STRING(result)
        w.end = w.buf + total
        if stream:
            write_string_field(&w, 0x0A, error_message)
            ww_byte(&w, 0x12)
            ww_varint(&w, <uint64_t>body)
        write_string_field(&w, 0x0A, model_name)
        write_string_field(&w, 0x12, model_version)
        write_string_field(&w, 0x1A, request_id)
        write_parameters(&w, 0x22, params)
        for meta in metas:
            ww_byte(&w, 0x2A)
            ww_varint(&w, <uint64_t>output_size(<tuple>meta))
            write_output(&w, <tuple>meta)
        for i in range(n_out):
            ww_byte(&w, 0x32)
            ww_varint(&w, <uint64_t>views[i].len)
            ww_raw(&w, <const char *>views[i].buf, views[i].len)
        if w.buf != w.end:
            writer_overflow()
        return result
    finally:
        for i in range(held):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)


# ================================================================ validation
include "validate.pyx"
