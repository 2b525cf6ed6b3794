"""Triton's Python backend utilities (`triton_python_backend_utils`), as the
reference server provides them to `model.py` files: the subset that model
files use, with Triton's names and behaviour.

Tensors are numpy arrays; BYTES tensors are object arrays of `bytes`.
Inputs view the server's shared memory without a copy (read them, do not
keep them past `execute`: the next request reuses the memory).
"""

import json
import sys

import numpy as np

# -- data types -------------------------------------------------------------

_TYPE_TO_NUMPY = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

# The protocol's datatype names and numpy types, both ways.
_OIP_TO_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def triton_string_to_numpy(triton_type_string):
    """The numpy type of a configuration's `data_type` (`TYPE_FP32`...)."""
    return _TYPE_TO_NUMPY.get(triton_type_string)


_NUMPY_TO_OIP = {}


def numpy_to_oip(dtype):
    """The protocol datatype of a numpy dtype (`FP32`...), None if none."""
    known = _NUMPY_TO_OIP.get(dtype)
    if known is not None:
        return known
    d = np.dtype(dtype)
    name = None
    if d.kind in ("O", "S", "U"):
        name = "BYTES"
    else:
        for oip, t in _OIP_TO_NUMPY.items():
            if t is not np.object_ and np.dtype(t) == d:
                name = oip
                break
    if name is not None:
        try:
            _NUMPY_TO_OIP[dtype] = name
        except TypeError:  # an unhashable dtype-like: not cached
            pass
    return name


def serialize_byte_tensor(array):
    """BYTES elements in the binary form: a 4-byte little-endian length, then
    the bytes, for each element in row-major order."""
    parts = []
    for e in np.asarray(array, dtype=object).reshape(-1):
        if isinstance(e, str):
            e = e.encode("utf-8")
        elif not isinstance(e, (bytes, bytearray, memoryview)):
            e = str(e).encode("utf-8")
        e = bytes(e)
        parts.append(len(e).to_bytes(4, "little"))
        parts.append(e)
    return b"".join(parts)


def deserialize_bytes_tensor(buffer):
    """The elements of a BYTES tensor in the binary form, as `bytes`."""
    out = []
    view = memoryview(buffer)
    at = 0
    while at < len(view):
        n = int.from_bytes(view[at:at + 4], "little")
        at += 4
        out.append(bytes(view[at:at + n]))
        at += n
    return np.array(out, dtype=object)


# -- errors -----------------------------------------------------------------

class TritonError:
    """An error a response carries: `InferenceResponse(error=TritonError(...))`."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message, code=INTERNAL):
        self._message = str(message)
        self._code = code

    def message(self):
        return self._message

    def code(self):
        return self._code

    def __repr__(self):
        return f"TritonError({self._message!r})"


class TritonModelException(Exception):
    """Raised by a model (or by these utilities) to fail the request."""

    def message(self):
        return str(self)


# -- tensors ----------------------------------------------------------------

class Tensor:
    """A named tensor: `Tensor(name, numpy_array)`.

    numpy has no BF16: a BF16 tensor is a `uint16` array of the values' bit
    patterns that remembers its type (through `to_dlpack`/`from_dlpack`
    too)."""

    def __init__(self, name, array, _datatype=None):
        if not isinstance(array, np.ndarray):
            raise TritonModelException(
                f"Tensor '{name}': expected a numpy array, got {type(array).__name__}")
        if numpy_to_oip(array.dtype) is None:
            raise TritonModelException(f"Tensor '{name}': numpy type {array.dtype} has no protocol datatype")
        self._name = name
        self._array = array
        self._datatype = _datatype

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def triton_dtype(self):
        return self._datatype or numpy_to_oip(self._array.dtype)

    def shape(self):
        return list(self._array.shape)

    def is_cpu(self):
        return True

    def to_dlpack(self):
        if self._array.dtype == np.object_:
            raise TritonModelException(f"Tensor '{self._name}': BYTES tensors have no DLPack form")
        return _Dlpack(self._array, self._datatype)

    @staticmethod
    def from_dlpack(name, capsule):
        if isinstance(capsule, _Dlpack):
            return Tensor(name, capsule.array, capsule.datatype)
        return Tensor(name, np.from_dlpack(_Capsule(capsule)))

    def __repr__(self):
        return f"Tensor({self._name!r}, {self._array!r})"


class _Dlpack:
    """What `Tensor.to_dlpack` returns: a DLPack producer (`__dlpack__`,
    for torch, numpy and the rest) that also keeps the tensor's type."""

    def __init__(self, array, datatype):
        self.array = array
        self.datatype = datatype

    def __dlpack__(self, stream=None, **kwargs):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class _Capsule:
    """What `np.from_dlpack` takes: an object with `__dlpack__`."""

    def __init__(self, obj):
        self._obj = obj

    def __dlpack__(self, stream=None):
        if hasattr(self._obj, "__dlpack__"):
            return self._obj.__dlpack__()
        return self._obj

    def __dlpack_device__(self):
        if hasattr(self._obj, "__dlpack_device__"):
            return self._obj.__dlpack_device__()
        return (1, 0)  # kDLCPU


def get_input_tensor_by_name(request, name):
    """The input `name` of `request`, None if the request has none."""
    return request._inputs.get(name)


def get_output_tensor_by_name(response, name):
    """The output `name` of `response` (a BLS response), None if none."""
    for t in response.output_tensors():
        if t.name() == name:
            return t
    return None


def get_input_config_by_name(model_config, name):
    for i in model_config.get("input", []):
        if i.get("name") == name:
            return i
    return None


def get_output_config_by_name(model_config, name):
    for o in model_config.get("output", []):
        if o.get("name") == name:
            return o
    return None


# -- requests and responses ---------------------------------------------------

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


def using_decoupled_model_transaction_policy(model_config):
    """Whether a model's configuration (the dict of `args["model_config"]`)
    makes it decoupled."""
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


class ResponseSender:
    """Sends a request's responses (`request.get_response_sender()`): any
    number of them for a decoupled model, one for any other, from any
    thread, until one is sent with `TRITONSERVER_RESPONSE_COMPLETE_FINAL`.
    The server hands each on to the client as it comes."""

    def __init__(self, index, queue):
        self._index = index
        self._queue = queue
        self._closed = False

    def send(self, response=None, flags=0):
        if self._closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                f"send expects an InferenceResponse or None, got {type(response).__name__}")
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None and not final:
            raise TritonModelException("send needs a response, or the TRITONSERVER_RESPONSE_COMPLETE_FINAL flag")
        self._closed = final
        try:
            self._queue.put((self._index, response, final))
        except Exception:
            # The request was ended with the reason (see the worker).
            self._closed = True
            raise

    def is_cancelled(self):
        return False


class InferenceRequest:
    """A request: one `execute` receives, or one a model makes of another
    model of the server (BLS): `InferenceRequest(model_name=...,
    requested_output_names=[...], inputs=[...]).exec()`."""

    def __init__(self, model_name="", requested_output_names=(), inputs=(), request_id="",
                 correlation_id=0, trace=None, flags=0, timeout=0, preferred_memory=None,
                 model_version=-1, parameters=None):
        self._model_name = model_name
        self._requested = list(requested_output_names)
        self._order = list(inputs)
        self._inputs = {t.name(): t for t in self._order}
        self._id = request_id
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout = timeout
        self._model_version = model_version

    def inputs(self):
        return list(self._order)

    def requested_output_names(self):
        return list(self._requested)

    def request_id(self):
        return self._id

    def correlation_id(self):
        return self._correlation_id

    def flags(self):
        return self._flags

    def parameters(self):
        return self._parameters

    def timeout(self):
        return self._timeout

    def is_cancelled(self):
        return False

    def model_name(self):
        return self._model_name

    def model_version(self):
        return self._model_version

    def get_response_sender(self):
        sender = getattr(self, "_sender", None)
        if sender is None:
            raise TritonModelException("get_response_sender: only requests given to execute have a response sender")
        return sender

    def exec(self, decoupled=False):
        """Runs this request on model `model_name` of the server, in the
        server, and returns its InferenceResponse (with `error()` set when
        it failed); with `decoupled=True`, a ResponseIterator over the
        model's responses as it sends them."""
        if _bls is None:
            raise TritonModelException("exec: this process is not a model worker of the server")
        return _bls(self, decoupled)

    async def async_exec(self, decoupled=False):
        return self.exec(decoupled)


class ResponseIterator:
    """The responses of a BLS request made with `exec(decoupled=True)`,
    each InferenceResponse as the model sends it; the last may have no
    outputs (a decoupled model's final flag alone). `cancel()` asks for no
    more; the called model is not told (its `is_cancelled()` stays False
    here), so, as in Triton for a model that does not check, the responses
    it still sends are read to its last."""

    def __init__(self, next_response, cancel=None):
        self._next = next_response
        self._cancel = cancel
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        got = self._next()
        if got is None:
            self._done = True
            raise StopIteration
        response, final = got
        if final:
            self._done = True
        return response

    def cancel(self):
        if not self._done and self._cancel is not None:
            self._cancel()


# The worker's way to run a BLS request (set by the worker).
_bls = None
# The worker's way to run a model of the servable on this replica (a
# MindSpore stage's Model.call; set by the worker).
_call_model = None


class InferenceResponse:
    """A request's answer: its output tensors, or an error."""

    def __init__(self, output_tensors=None, error=None, parameters=None):
        self._outputs = list(output_tensors or [])
        self._error = error
        self._parameters = parameters

    def output_tensors(self):
        return list(self._outputs)

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


# -- logging ----------------------------------------------------------------

class Logger:
    """Triton's `pb_utils.Logger`: lines the server logs under the model."""

    @staticmethod
    def log(message, level=None):
        Logger._write(level or Logger.INFO, message)

    @staticmethod
    def log_info(message):
        Logger._write(Logger.INFO, message)

    @staticmethod
    def log_warn(message):
        Logger._write(Logger.WARNING, message)

    @staticmethod
    def log_error(message):
        Logger._write(Logger.ERROR, message)

    @staticmethod
    def log_verbose(message):
        Logger._write(Logger.VERBOSE, message)

    INFO = "INFO"
    WARNING = "WARN"
    ERROR = "ERROR"
    VERBOSE = "VERBOSE"

    @staticmethod
    def _write(level, message):
        # One line per message: the server reads stderr line by line.
        text = str(message).replace("\n", "\\n")
        sys.stderr.write(f"\x1eserving-python {level} {text}\n")
        sys.stderr.flush()


# -- auto-complete ------------------------------------------------------------

class ModelConfig:
    """What `auto_complete_config` receives and returns: the model's
    configuration, which the model may complete."""

    def __init__(self, config):
        self._config = config

    def as_dict(self):
        return self._config

    def max_batch_size(self):
        return int(self._config.get("max_batch_size", 0))

    def set_max_batch_size(self, max_batch_size):
        self._config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self):
        self._config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, transaction_policy_dict):
        self._config["model_transaction_policy"] = dict(transaction_policy_dict)

    def _add(self, kind, tensor):
        if not isinstance(tensor, dict) or "name" not in tensor:
            raise TritonModelException(f"add_{kind}: a dict with at least 'name' is expected, got {tensor!r}")
        key = "input" if kind == "input" else "output"
        entries = self._config.setdefault(key, [])
        for e in entries:
            if e.get("name") == tensor["name"]:
                for field in ("data_type", "dims"):
                    if field in tensor and field in e and _norm(field, tensor[field]) != _norm(field, e[field]):
                        raise TritonModelException(
                            f"auto-complete: {kind} '{tensor['name']}' has {field} {e[field]} in the configuration "
                            f"and {tensor[field]} in the model")
                    if field in tensor and field not in e:
                        e[field] = tensor[field]
                return
        entries.append(dict(tensor))

    def add_input(self, input):
        self._add("input", input)

    def add_output(self, output):
        self._add("output", output)


def _norm(field, value):
    if field == "dims":
        return [int(d) for d in value]
    return value
