"""`mindspore_serving.server.register`, as the reference server provides it.

A `servable_config.py` declares its models and registers its methods with
these functions, as with MindSpore Serving; importing it records a plan
(`_plan()`): the models, and each method's inputs, outputs and stages with
where every stage's arguments come from. The server runs that plan: model
stages on ONNX Runtime, Python stages in worker processes like this one.

Differences from MindSpore Serving (docs/server.md lists them too):
- a model declared as MindIR (`MindIR`, `MindIR_Lite`, `OM`, `mindir_opt`)
  runs from the ONNX file of the same name beside it (`net.mindir` ->
  `net.onnx`); `model_format="ONNX"` names the ONNX file itself;
- C++ stage functions (a stage given by name) and distributed servables are
  refused with a clear error;
- `Model.call` inside a Python stage is refused with a clear error.
"""

import ast
import inspect

# What importing servable_config.py declared, in order.
_models = []
_methods = []
# (method, stage index from 1) -> (function, batch_size, tag, inputs, outputs)
_stage_functions = {}
_servable = {"name": ""}

_MINDIR_FORMATS = ("mindir", "mindir_lite", "om", "mindir_opt")


class _TensorDef:
    """A value of a method: input `index` (stage 0) or output `index` of a
    stage (counted from 1)."""

    def __init__(self, stage, index):
        self.stage = stage
        self.index = index

    def as_pair(self):
        return [self.stage, self.index]


class _Options:
    """Device and context settings: accepted and kept, since they tune
    MindSpore's runtimes, which the server does not use."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def append_device_info(self, info):
        self.kwargs.setdefault("device_info", []).append(info)


class Context(_Options):
    pass


class CPUDeviceInfo(_Options):
    pass


class GPUDeviceInfo(_Options):
    pass


class AscendDeviceInfo(_Options):
    pass


class AclOptions(_Options):
    pass


class GpuOptions(_Options):
    pass


class Model:
    """A declared model (what `declare_model` returns)."""

    def __init__(self, index, model_file):
        self.index = index
        self.model_file = model_file
        self.model_key = model_file

    def call(self, *args, subgraph=0):
        """Runs the model from a Python stage, on the stage's replica:
        `call(x1, x2, ...)` with one instance's values gives its output (a
        tuple of them when the model has several); `call([(x1, x2), ...])`
        with several instances gives a list of output tuples, one per
        instance (run as one batch when the model has a batch dimension)."""
        import numpy as np
        import triton_python_backend_utils as pb_utils

        def failed(why):
            return RuntimeError(f"Model({self.model_file}).call() failed: {why}")

        if isinstance(subgraph, bool) or not isinstance(subgraph, int) or subgraph != 0:
            raise RuntimeError(
                f"The model does not have subgraph of index {subgraph}, the subgraph count of the model is 1")
        if not args:
            raise failed("no inputs provided")
        single = not (len(args) == 1 and isinstance(args[0], list))
        if single:
            instances = [args]
        else:
            instances = args[0]
            if not instances:
                raise failed("Input instances count is 0")
            if not all(isinstance(i, (tuple, list)) for i in instances):
                raise failed("inputs format invalid")
        instances = [[np.asarray(v) for v in i] for i in instances]
        if any(len(i) != len(instances[0]) for i in instances):
            raise failed("inputs format invalid")
        call = pb_utils._call_model
        if call is None:
            raise failed("a model is called from a stage of a servable the server is serving")
        batched = _models[self.index]["with_batch_dim"] if self.index < len(_models) else False
        try:
            same = all(a.shape == b.shape and a.dtype == b.dtype for i in instances for a, b in zip(i, instances[0]))
            if batched and same:
                # One run of the instances as the batch's rows.
                stacked = [np.stack([i[k] for i in instances]) for k in range(len(instances[0]))]
                outputs = call(self.model_file, stacked)
                if any(o.ndim == 0 or o.shape[0] != len(instances) for o in outputs):
                    raise RuntimeError(
                        f"the model's outputs do not have the {len(instances)} instances as their first dimension")
                results = [tuple(o[n] for o in outputs) for n in range(len(instances))]
            else:
                results = [tuple(call(self.model_file, [v[None] if batched else v for v in i]))
                           for i in instances]
                if batched:
                    if any(o.ndim == 0 or o.shape[0] != 1 for r in results for o in r):
                        raise RuntimeError("the model's outputs do not have the instance as their first dimension")
                    results = [tuple(o[0] for o in r) for r in results]
        except RuntimeError as e:
            raise failed(e) from None
        if single:
            return results[0][0] if len(results[0]) == 1 else results[0]
        return results


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeError(f"Parameter '{name}' should be int, but actually {type(value)}")
    if value < minimum:
        raise RuntimeError(f"Parameter '{name}' should be >= {minimum}")


def declare_model(model_file, model_format, with_batch_dim=True, options=None, without_batch_dim_inputs=None,
                  context=None, config_file=None):
    """Declares a model of the servable; returns the `Model` stages name."""
    if isinstance(model_file, (list, tuple)):
        if len(model_file) != 1:
            raise RuntimeError(
                f"model files {list(model_file)}: models of several graphs are not served by the reference "
                "server; export one ONNX file")
        model_file = model_file[0]
    if not isinstance(model_file, str) or not model_file:
        raise RuntimeError(f"Parameter 'model_file' should be a non-empty str, but actually {model_file!r}")
    if not isinstance(model_format, str):
        raise RuntimeError(f"Parameter 'model_format' should be str, but actually {type(model_format)}")
    fmt = model_format.lower()
    if fmt not in _MINDIR_FORMATS + ("onnx",):
        raise RuntimeError(
            f"model format '{model_format}' is not supported, only support 'MindIR', 'MindIR_Lite', 'OM', "
            "'mindir_opt' (each served from the ONNX file of the same name) and 'ONNX'")
    if any(m["file"] == model_file for m in _models):
        raise RuntimeError(f"model file '{model_file}' has already been used")
    skipped = list(without_batch_dim_inputs or [])
    if isinstance(without_batch_dim_inputs, int):
        skipped = [without_batch_dim_inputs]
    _models.append({
        "file": model_file,
        "format": fmt,
        "with_batch_dim": bool(with_batch_dim),
        "without_batch_dim_inputs": skipped,
    })
    return Model(len(_models) - 1, model_file)


def declare_servable(servable_file, model_format, with_batch_dim=True, options=None, without_batch_dim_inputs=None):
    """The deprecated form of `declare_model`."""
    return declare_model(servable_file, model_format, with_batch_dim=with_batch_dim, options=options,
                         without_batch_dim_inputs=without_batch_dim_inputs)


class _MethodContext:
    def __init__(self, name, counts):
        self.name = name
        self.stages = []
        # Output counts of the deprecated call_* forms, read from the
        # method's source (they take none).
        self.counts = counts
        self.called = set()


_current = None


def add_stage(stage, *args, outputs_count, batch_size=None, tag=None):
    """Adds a stage to the method being registered: a Python function or a
    declared model, fed with `args` (method inputs or earlier stages'
    outputs); returns placeholders for its `outputs_count` outputs."""
    method = _current
    if method is None:
        raise RuntimeError("add_stage must be called inside a function decorated with register_method")
    for item in args:
        if not isinstance(item, _TensorDef):
            raise RuntimeError("Each value of parameter *args is a placeholder for data and must come from the "
                               "method inputs or the outputs of add_stage")
    _check_int("outputs_count", outputs_count, 1)
    if tag is not None and not isinstance(tag, str):
        raise RuntimeError(f"Parameter 'tag' should be str, but actually {type(tag)}")
    index = len(method.stages) + 1
    inputs = [a.as_pair() for a in args]
    if isinstance(stage, Model):
        if stage.index >= len(_models) or _models[stage.index]["file"] != stage.model_file:
            raise RuntimeError(f"Check failed in method '{method.name}', the parameter 'stage' of add_stage must "
                               "be function or Model returned by declare_model")
        method.stages.append({"kind": "model", "model": stage.index, "inputs": inputs,
                              "outputs_count": outputs_count, "tag": tag or ""})
    elif inspect.isfunction(stage) or inspect.isbuiltin(stage) or callable(stage) and not isinstance(stage, str):
        if batch_size is not None:
            _check_int("batch_size", batch_size, 0)
        else:
            try:
                count = len(inspect.signature(stage).parameters)
            except (TypeError, ValueError):
                count = len(args)
            if count != len(args):
                raise RuntimeError(f"function {getattr(stage, '__name__', stage)} input args count {count} not "
                                   f"match the count {len(args)} registered in method")
        name = getattr(stage, "__name__", type(stage).__name__)
        method.stages.append({"kind": "function", "function": name, "inputs": inputs,
                              "outputs_count": outputs_count, "batch_size": batch_size, "tag": tag or ""})
        _stage_functions[(method.name, index)] = (stage, batch_size, tag, len(args), outputs_count)
    elif isinstance(stage, str):
        raise RuntimeError(f"stage '{stage}' of method '{method.name}': C++ stage functions registered by name "
                           "are not supported by the reference server; write the stage in Python")
    else:
        raise RuntimeError(f"Check failed in method '{method.name}', the parameter 'stage' of add_stage must be "
                           f"function or Model returned by declare_model, now is {type(stage)}")
    outputs = [_TensorDef(index, i) for i in range(outputs_count)]
    return outputs[0] if outputs_count == 1 else tuple(outputs)


def _deprecated_count(call):
    method = _current
    if method is None:
        raise RuntimeError(f"{call} must be called inside a function decorated with register_method")
    if call not in method.counts:
        raise RuntimeError(
            f"Failed to parse method '{method.name}', complex statements such as conditions and loops are not "
            f"supported in register_method when the interface '{call}' is used, use 'add_stage' to replace "
            f"'{call}'")
    return method.counts[call]


def _once(call, group, before=()):
    method = _current
    if group in method.called:
        raise RuntimeError(f"Check failed in method '{method.name}', {call} should not be invoked more than once")
    for later in before:
        if later in method.called:
            raise RuntimeError(f"Check failed in method '{method.name}', {later} should be invoked after {call}")
    method.called.add(group)


def call_preprocess(preprocess_fun, *args):
    """Deprecated: `add_stage(preprocess_fun, *args, tag="Preprocess")`."""
    count = _deprecated_count("call_preprocess")
    _once("call_preprocess", "call_preprocess", ("call_servable", "call_postprocess"))
    return add_stage(preprocess_fun, *args, outputs_count=count, tag="Preprocess")


def call_preprocess_pipeline(preprocess_fun, *args):
    """Deprecated: a batch preprocessing function (instances in, one result
    per instance out)."""
    count = _deprecated_count("call_preprocess_pipeline")
    _once("call_preprocess_pipeline", "call_preprocess", ("call_servable", "call_postprocess"))
    return add_stage(preprocess_fun, *args, outputs_count=count, batch_size=1, tag="Preprocess")


def call_servable(*args):
    """Deprecated: the one declared model as a stage."""
    count = _deprecated_count("call_servable")
    _once("call_servable", "call_servable", ("call_postprocess",))
    if not _models:
        raise RuntimeError("There is no model declared, you can use declare_model to declare models.")
    if len(_models) > 1:
        raise RuntimeError("There are more than one servable declared when the interface 'call_servable' is used, "
                           "use 'add_stage' to replace 'call_servable'")
    return add_stage(Model(0, _models[0]["file"]), *args, outputs_count=count)


def call_postprocess(postprocess_fun, *args):
    """Deprecated: `add_stage(postprocess_fun, *args, tag="Postprocess")`."""
    count = _deprecated_count("call_postprocess")
    _once("call_postprocess", "call_postprocess")
    return add_stage(postprocess_fun, *args, outputs_count=count, tag="Postprocess")


def call_postprocess_pipeline(postprocess_fun, *args):
    """Deprecated: a batch postprocessing function."""
    count = _deprecated_count("call_postprocess_pipeline")
    _once("call_postprocess_pipeline", "call_postprocess")
    return add_stage(postprocess_fun, *args, outputs_count=count, batch_size=1, tag="Postprocess")


_DEPRECATED = ("call_preprocess", "call_preprocess_pipeline", "call_servable", "call_postprocess",
               "call_postprocess_pipeline")


def _deprecated_counts(func):
    """How many outputs each deprecated call_* of `func`'s body assigns
    (`a, b = register.call_preprocess(...)` gives 2), read from its
    source as MindSpore reads it."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    source = "\n".join(line[indent:] for line in lines)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    counts = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            continue
        f = node.value.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name not in _DEPRECATED:
            continue
        target = node.targets[0]
        counts[name] = len(target.elts) if isinstance(target, ast.Tuple) else 1
    return counts


def register_method(output_names):
    """Registers the decorated function as a method: its parameters are the
    method's inputs, `output_names` its outputs; its body runs once, now,
    on placeholders, recording the stages."""
    if isinstance(output_names, str):
        output_names = [output_names]
    if not isinstance(output_names, (list, tuple)) or not output_names or \
            not all(isinstance(n, str) and n for n in output_names):
        raise RuntimeError(f"Parameter 'output_names' should be str or tuple/list of str, but actually "
                           f"{output_names!r}")
    output_names = list(output_names)

    def register(func):
        global _current
        name = func.__name__
        inputs = []
        for k, v in inspect.signature(func).parameters.items():
            kind = {inspect.Parameter.VAR_POSITIONAL: "VAR_POSITIONAL",
                    inspect.Parameter.VAR_KEYWORD: "VAR_KEYWORD",
                    inspect.Parameter.KEYWORD_ONLY: "KEYWORD_ONLY"}.get(v.kind)
            if kind:
                raise RuntimeError(f"'{name}' input {k} cannot be {kind} !")
            inputs.append(k)
        if any(m["name"] == name for m in _methods):
            raise RuntimeError(f"Method {name} has been registered more than once.")
        _current = _MethodContext(name, _deprecated_counts(func))
        try:
            returned = func(*[_TensorDef(0, i) for i in range(len(inputs))])
        finally:
            method, _current = _current, None
        if isinstance(returned, _TensorDef):
            returned = (returned,)
        if not isinstance(returned, (list, tuple)) or \
                not all(isinstance(r, _TensorDef) for r in returned):
            raise RuntimeError("Each value returned is a placeholder for data and must come from the method inputs "
                               "or the outputs of add_stage")
        if len(returned) != len(output_names):
            raise RuntimeError(f"Method return output size {len(returned)} not match registered "
                               f"{len(output_names)}")
        _methods.append({
            "name": name,
            "inputs": inputs,
            "outputs": output_names,
            "returns": [r.as_pair() for r in returned],
            "stages": method.stages,
        })
        return func

    return register


def _plan():
    """What servable_config.py declared: the models and the methods."""
    if not _methods:
        raise RuntimeError(f"There is no method registered for servable {_servable['name']}")
    return {"models": _models, "methods": _methods}
