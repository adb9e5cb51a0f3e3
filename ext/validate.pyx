# Included by wire.pyx (one extension module; it reads the request types' fields
# directly, as C struct members).
#
# Request validation for the common case, against facts a model version reads
# once at load (InputSpecs). A request whose inputs are all raw, fixed-size,
# without reshape, named, typed and shaped as the config says, gets its input
# arrays (zero-copy views of the request bytes) here in a few microseconds.
# Anything else (an error of any kind, typed contents, BYTES, reshape, optional
# inputs left out, shared memory) returns None, and the Python validator
# (request_inputs.py) takes the request from the start: it alone builds error
# texts, so a request is refused with the same words whichever path saw it.

cdef class InputSpecs:
    """What the fast path checks, per model version: see ``validate_raw_inputs``."""
    cdef readonly Py_ssize_t max_batch_size, input_count
    cdef readonly dict inputs          # name -> (wire datatype, dims tuple, numpy dtype)
    cdef readonly list output_names    # all outputs, config order
    cdef readonly frozenset output_set

    def __init__(self, Py_ssize_t max_batch_size, Py_ssize_t input_count, dict inputs,
                 list output_names):
        """``inputs``: only the inputs the fast path may serve (fixed-size datatype,
        no reshape); a request naming any other input goes to the Python validator."""
        self.max_batch_size = max_batch_size
        self.input_count = input_count
        self.inputs = inputs
        self.output_names = output_names
        self.output_set = frozenset(output_names)


def validate_raw_inputs(InferRequest request, InputSpecs specs):
    """``(arrays, batch, output_names)`` for a request the fast path accepts, else None.

    ``arrays`` maps each input name to a read-only numpy view of its raw bytes in
    the request's shape; ``batch`` is the batch size (0 without batching);
    ``output_names`` the requested outputs (all of them, in config order, when the
    request names none).
    """
    try:
        return _validate_raw_inputs(request, specs)
    except (OverflowError, TypeError, ValueError, BufferError):
        # a dim beyond int64 (HTTP JSON), a non-int dim, a buffer numpy cannot view
        return None


cdef object _validate_raw_inputs(InferRequest request, InputSpecs specs):
    cdef list inputs = request.inputs
    cdef list raw = request.raw_input_contents
    cdef Py_ssize_t n = len(inputs), i, j, ndim, offset
    cdef Py_ssize_t batch = -1, nbytes
    cdef int64_t dim, want, count
    cdef InferInput tensor
    cdef RequestedOutput output
    cdef tuple spec, dims
    cdef list shape
    cdef dict arrays = {}
    cdef list names
    cdef bint batched = specs.max_batch_size > 0
    cdef object dtype, view
    if n != specs.input_count or len(raw) != n:
        return None
    for i in range(n):
        tensor = <InferInput>inputs[i]
        if tensor.contents is not None or tensor.parameters:
            return None       # typed contents; or parameters, e.g. shared memory
        spec = specs.inputs.get(tensor.name)
        if spec is None or tensor.name in arrays or tensor.datatype != spec[0]:
            return None
        dims = <tuple>spec[1]
        shape = <list>tensor.shape
        ndim = len(shape)
        offset = 1 if batched else 0
        if ndim != len(dims) + offset:
            return None
        dtype = spec[2]
        view = raw[i]
        if type(view) is not memoryview:
            return None       # an array handed over in-process (ensemble step, BLS)
        nbytes = view.nbytes
        count = (<cnp.dtype>dtype).itemsize
        for j in range(ndim):
            dim = shape[j]
            if dim < 0:
                return None
            if j < offset:
                if dim < 1 or dim > specs.max_batch_size:
                    return None
                if batch == -1:
                    batch = dim
                elif dim != batch:
                    return None
            else:
                want = dims[j - offset]
                if want != -1 and want != dim:
                    return None
            # The byte count bounds the product: no overflow, nothing sized from the shape.
            if dim != 0 and count > nbytes // dim:
                return None
            count *= dim
        if count != nbytes:
            return None
        arrays[tensor.name] = np.frombuffer(view, dtype).reshape(shape)
    if request.outputs:
        names = []
        for i in range(len(request.outputs)):
            output = <RequestedOutput>request.outputs[i]
            if output.name not in specs.output_set or output.name in names:
                return None
            names.append(output.name)
    else:
        names = list(specs.output_names)
    return arrays, (batch if batched else 0), names
