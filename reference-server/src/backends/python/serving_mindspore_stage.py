"""One Python stage of a MindSpore method (`register.add_stage(function, ...)`
in a `servable_config.py`), run by the worker as a model: each request of
`execute` is one job, its inputs `in0..` rows first (one row per instance),
its outputs `out0..` likewise.

As MindSpore Serving calls stage functions:
- without `batch_size`, once per instance, with that instance's values;
- with `batch_size` k >= 1, with a list of at most k instances (each a tuple
  of values), all of them for 0; the function returns or yields one result
  per instance (extra results are ignored, missing ones fail the job);
- numeric values are numpy arrays, text (MS_STRING) a `str`, bytes
  (MS_BYTES) a 1-D uint8 array; results may be numpy arrays, `str`,
  `bytes`, `bool`, `int` or `float`.
A failure answers the job with MindSpore's text: `Call {tag} Failed, method:
'{method}', stage index(begin with 1): {k}, error msg: {error}`.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class Stage:
    def __init__(self, servable, method, index, function, batch_size, tag, inputs, outputs):
        self.method = method
        self.index = index
        self.function = function
        self.batch_size = batch_size
        self.inputs = inputs
        self.outputs = outputs
        name = getattr(function, "__name__", type(function).__name__)
        self.label = tag if tag else f"Function '{servable}.{name}'"

    def failed(self, error):
        return (f"Call {self.label} Failed, method: '{self.method}', stage index(begin with 1): {self.index}, "
                f"error msg: {error}")

    def execute(self, requests):
        """Runs the stage on the instances of every request (several
        requests' instances share a call of a batch function, as MindSpore
        batches them); answers each request with its rows, or its error."""
        errors = [None] * len(requests)
        instances = []  # (request, values)
        for n, request in enumerate(requests):
            try:
                instances.extend((n, values) for values in self.instances(request))
            except Exception as e:  # noqa: BLE001  the request's failure, its answer
                errors[n] = e
        results = [None] * len(instances)
        if self.batch_size is None:
            for i, (n, values) in enumerate(instances):
                if errors[n] is None:
                    try:
                        results[i] = self.normalize(self.function(*values))
                    except Exception as e:  # noqa: BLE001
                        errors[n] = e
        else:
            live = [i for i, (n, _) in enumerate(instances) if errors[n] is None]
            size = self.batch_size or max(len(live), 1)
            for start in range(0, len(live), size):
                chunk = live[start:start + size]
                try:
                    got = self.function([instances[i][1] for i in chunk])
                    got = [] if got is None else list(got)
                    if len(got) < len(chunk):
                        raise RuntimeError(f"the function returned {len(got)} results for {len(chunk)} instances")
                    for i, g in zip(chunk, got):
                        results[i] = self.normalize(g)
                except Exception as e:  # noqa: BLE001  fails the requests of the chunk
                    for i in chunk:
                        errors[instances[i][0]] = e
        responses = []
        for n in range(len(requests)):
            if errors[n] is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(self.failed(errors[n]))))
                continue
            mine = [results[i] for i, (m, _) in enumerate(instances) if m == n]
            try:
                outputs = [_stack(f"out{j}", j, [r[j] for r in mine]) for j in range(self.outputs)]
                responses.append(pb_utils.InferenceResponse(outputs))
            except Exception as e:  # noqa: BLE001
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(self.failed(e))))
        return responses

    def instances(self, request):
        """A request's instances: for each row, a tuple of its values."""
        tensors = [pb_utils.get_input_tensor_by_name(request, f"in{i}") for i in range(self.inputs)]
        if any(t is None for t in tensors):
            raise RuntimeError("the stage was given fewer inputs than it takes")
        arrays = [t.as_numpy() for t in tensors]
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        return [tuple(_value(a, r, getattr(t, "_text", False)) for a, t in zip(arrays, tensors))
                for r in range(rows)]

    def normalize(self, result):
        if self.outputs == 1:
            if isinstance(result, (tuple, list)) and len(result) == 1:
                result = result[0]
            values = [result]
        else:
            if not isinstance(result, (tuple, list)):
                raise RuntimeError(f"the function returned one value where the method registered "
                                   f"{self.outputs} outputs")
            if len(result) != self.outputs:
                raise RuntimeError(f"the function returned {len(result)} values where the method registered "
                                   f"{self.outputs} outputs")
            values = list(result)
        return [_result(j, v) for j, v in enumerate(values)]


def _value(array, r, text):
    """Instance `r`'s value of an input, as MindSpore hands it to stages: a
    numpy array (0-d for a scalar), a str for text, a uint8 array for
    bytes."""
    row = array[r:r + 1].reshape(array.shape[1:])
    if row.dtype != object or row.size != 1:
        return row
    e = row.reshape(-1)[0]
    if text:
        return e.decode("utf-8") if isinstance(e, (bytes, bytearray)) else str(e)
    return np.frombuffer(bytes(e), dtype=np.uint8)


def _result(j, v):
    """A stage result as ("text"|"bytes"|"array", value)."""
    if v is None:
        raise RuntimeError(f"output {j} is None")
    if isinstance(v, str):
        return ("text", v)
    if isinstance(v, (bytes, bytearray)):
        return ("bytes", bytes(v))
    if isinstance(v, bool):
        return ("array", np.array(v, dtype=np.bool_))
    if isinstance(v, int):
        return ("array", np.array(v, dtype=np.int64))
    if isinstance(v, float):
        return ("array", np.array(v, dtype=np.float64))
    if isinstance(v, (np.ndarray, np.generic)):
        a = np.asarray(v)
        if a.dtype.kind == "U":
            return ("array", a.astype(object)) if a.size != 1 else ("text", str(a.reshape(-1)[0]))
        if pb_utils.numpy_to_oip(a.dtype) is None:
            raise RuntimeError(f"output {j} has numpy type {a.dtype}, which no protocol carries")
        return ("array", a)
    raise RuntimeError(f"output {j} is a {type(v).__name__}: a stage returns numpy arrays, str, bytes, bool, "
                       "int or float")


def _stack(name, j, values):
    """The instances' values of output `j` as one tensor, rows first."""
    kinds = {k for k, _ in values}
    if len(kinds) > 1:
        raise RuntimeError(f"output {j} is of different kinds for different instances: {sorted(kinds)}")
    kind = kinds.pop() if kinds else "array"
    if kind in ("text", "bytes"):
        array = np.empty(len(values), dtype=object)
        for i, (_, v) in enumerate(values):
            array[i] = v
        t = pb_utils.Tensor(name, array)
        t._text = kind == "text"
        return t
    arrays = [v for _, v in values]
    first = arrays[0]
    for a in arrays[1:]:
        if a.shape != first.shape or a.dtype != first.dtype:
            raise RuntimeError(f"output {j} differs between instances of one batch: {first.dtype}{list(first.shape)} "
                               f"and {a.dtype}{list(a.shape)}")
    return pb_utils.Tensor(name, np.stack(arrays))
