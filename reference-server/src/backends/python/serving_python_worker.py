"""The reference server's Python model worker: one process per model
instance, started by the server with the model's interpreter.

Control messages travel on the process's stdin and stdout (a 4-byte
little-endian length, then JSON); tensors travel through one shared-memory
region the server creates and sizes. Anything the model prints goes to
stderr, which the server logs: stdout is the control channel alone.

Requests (server to worker), each answered once:
  {"op": "region", "path", "size"}          map the region (a new one replaces the old)
  {"op": "load", "model_file", "model_dir"}  import model.py, make the model object
  {"op": "register", "config_file", "servable"}   -> {"plan"} what a MindSpore servable_config.py declares
  {"op": "load_stage", "config_file", "servable", "method", "stage"}
                                            a Python stage of a MindSpore method as the model
  {"op": "auto_complete", "config"}         -> {"config"} the completed configuration
  {"op": "initialize", "args"}              the model's initialize(args)
  {"op": "execute", "requests"}             -> {"responses"}; may first ask {"op": "need", "bytes"}
                                            (answered by a "region" to map, or {"op": "region",
                                            "refused": text} when the server has no memory for it),
                                            and, for a decoupled model, hand on each response
                                            sent by a ResponseSender: {"op": "response", "request",
                                            "final", "outputs" | "error"}, answered {"ok": true}
  {"op": "finalize"}                        the model's finalize(), then exit
BLS requests (worker to server, during an execute) are described in the
server's backends/python/bls.rs.
Every answer is {"ok": true, ...} or {"ok": false, "error": text}.
"""

import importlib.util
import json
import mmap
import os
import queue
import struct
import sys
import threading
import time
import traceback

# stdout is the control channel: keep it, and send fd 1 (print, C code) to
# stderr before the model's code runs.
_control_in = os.fdopen(os.dup(0), "rb", buffering=0)
_control_out = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)
sys.stdout = sys.stderr

import numpy as np  # noqa: E402

import triton_python_backend_utils as pb_utils  # noqa: E402

ALIGN = 64


def _read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = _control_in.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def receive():
    head = _read_exact(4)
    if head is None:
        return None
    (n,) = struct.unpack("<I", head)
    body = _read_exact(n)
    if body is None:
        return None
    return json.loads(body)


def send(message):
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    _control_out.write(struct.pack("<I", len(body)) + body)


def align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Forwarder:
    """Where a decoupled model's response senders send during one execute:
    each response goes to the server at once (Worker.forward), and `wait`
    returns once every request has sent its last."""

    def __init__(self, worker, count):
        self.worker = worker
        self.open = set(range(count))
        self.cond = threading.Condition()

    def put(self, item):
        n, response, final = item
        try:
            self.worker.forward(n, response, final)
        except pb_utils.TritonModelException as e:
            # A response that cannot be handed on (no shared memory for its
            # outputs) ends its request with the reason, so that execute's
            # wait ends; the sender, maybe a thread of the model's, hears
            # of it too.
            self.worker.forward(n, pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))), True)
            self.done(n)
            raise
        if final:
            self.done(n)

    def done(self, n):
        with self.cond:
            self.open.discard(n)
            self.cond.notify_all()

    def wait(self):
        with self.cond:
            while self.open:
                self.cond.wait()


class Worker:
    def __init__(self):
        self.region = None
        self.size = 0
        self.base = 0
        self.model = None
        self.module = None
        self.free_from = 0
        self.decoupled = False
        # What the requests' response senders send (one queue for the
        # worker's life: making one per call costs more than the call).
        self.sent = queue.Queue()
        # One exchange with the server at a time: a decoupled model's
        # threads send responses and make BLS calls while execute runs.
        self.lock = threading.RLock()

    # -- the region ----------------------------------------------------------

    def map(self, path, size):
        fd = os.open(path, os.O_RDWR)
        try:
            self.region = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.size = size
        # Where the region starts in memory, to tell the arrays in it.
        self.base = np.frombuffer(self.region, dtype=np.uint8, count=1).ctypes.data if size else 0

    def input(self, spec):
        name, datatype, shape = spec["name"], spec["datatype"], spec["shape"]
        offset, size = spec["offset"], spec["size"]
        if datatype == "BYTES":
            array = pb_utils.deserialize_bytes_tensor(memoryview(self.region)[offset:offset + size])
            t = pb_utils.Tensor(name, array.reshape(shape))
            t._text = bool(spec.get("text"))
            return t
        bf16 = datatype == "BF16"
        dtype = np.uint16 if bf16 else pb_utils._OIP_TO_NUMPY.get(datatype)
        if dtype is None:
            raise pb_utils.TritonModelException(f"input '{name}': datatype {datatype} has no numpy type")
        count = size // np.dtype(dtype).itemsize
        array = np.frombuffer(self.region, dtype=dtype, count=count, offset=offset).reshape(shape)
        return pb_utils.Tensor(name, array, "BF16" if bf16 else None)

    def write_outputs(self, responses, start):
        """Lays the responses' outputs out from `start`; returns their
        descriptions, or the bytes the region must hold when it is short:
        room for every output copied, since outputs that lie in this region
        (passed through) do not lie in the next one."""
        layout = []
        at = start
        every = start
        for r in responses:
            if r is None or r.has_error():
                layout.append(None)
                continue
            entries = []
            for t in r.output_tensors():
                array = t.as_numpy()
                datatype = t.triton_dtype()
                if datatype == "BYTES":
                    data = pb_utils.serialize_byte_tensor(array)
                else:
                    data = np.ascontiguousarray(array)
                    # An output that is an input, or part of one, already
                    # lies in the region: described where it is, not copied.
                    inside = self.offset_in_region(data)
                    if inside is not None:
                        entries.append((t, datatype, list(array.shape), None, inside, data.nbytes))
                        every = align(every + data.nbytes)
                        continue
                size = len(data) if isinstance(data, bytes) else data.nbytes
                every = align(every + size)
                entries.append((t, datatype, list(array.shape), data, at, size))
                at = align(at + size)
            layout.append(entries)
        # Nothing copied: nothing to make room for, wherever `start` is.
        if at > start and at > self.size:
            return None, every
        out = []
        for entries in layout:
            if entries is None:
                out.append(None)
                continue
            described = []
            for t, datatype, shape, data, offset, size in entries:
                if data is not None:
                    self.write(offset, data, size)
                d = {"name": t.name(), "datatype": datatype, "shape": shape, "offset": offset, "size": size}
                if getattr(t, "_text", False):
                    d["text"] = True
                described.append(d)
            out.append(described)
        return out, at

    def place(self, tensors):
        """Lays pb_utils.Tensor objects out in the region's free space for
        a request to the server: their descriptions and where they end.
        Raises TritonModelException when the server has no room."""
        laid = []
        for t in tensors:
            array = t.as_numpy()
            datatype = t.triton_dtype()
            data = pb_utils.serialize_byte_tensor(array) if datatype == "BYTES" else np.ascontiguousarray(array)
            size = len(data) if isinstance(data, bytes) else data.nbytes
            laid.append((t.name(), datatype, list(array.shape), data, size))

        def layout(base):
            at, placed = base, []
            for name, datatype, shape, data, size in laid:
                placed.append((name, datatype, shape, data, at, size))
                at = align(at + size)
            return placed, at

        placed, end = layout(self.free_from)
        if end > self.size:
            send({"op": "need", "bytes": end - self.free_from, "bls": True})
            try:
                self.await_region()
            except pb_utils.TritonModelException as e:
                raise pb_utils.TritonModelException(
                    f"the request's inputs need {end - self.free_from} bytes of shared memory: {e}") from None
            self.free_from = 0
            placed, end = layout(0)
        described = []
        for name, datatype, shape, data, offset, size in placed:
            self.write(offset, data, size)
            described.append({"name": name, "datatype": datatype, "shape": shape, "offset": offset, "size": size})
        return described, end

    def bls(self, request, decoupled=False):
        """Runs a BLS request through the server: its inputs into the
        region, the server runs the model and writes the outputs after
        them; they are copied out (the region is reused). Decoupled: a
        ResponseIterator that asks the server for each response in turn.
        From any of the model's threads: one exchange at a time."""
        with self.lock:
            return self._bls(request, decoupled)

    def _bls(self, request, decoupled):
        def failed(text):
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(text))
            return pb_utils.ResponseIterator(iter([(response, True)]).__next__) if decoupled else response

        try:
            described, end = self.place(request.inputs())
        except pb_utils.TritonModelException as e:
            return failed(str(e))
        version = request.model_version()
        reply = self.ask({"op": "infer", "model": request.model_name(),
                          "version": "" if version in (-1, None) else str(version),
                          "id": request.request_id(), "inputs": described,
                          "outputs": request.requested_output_names(), "at": end,
                          "decoupled": bool(decoupled)})
        if not reply.get("ok"):
            return failed(reply.get("error", "BLS request failed"))
        if decoupled:
            stream = reply["stream"]

            def next_response():
                # The request's inputs are the server's now: each response
                # is written from the start of the free space, and copied out.
                with self.lock:
                    got = self.ask({"op": "next", "stream": stream, "at": self.free_from})
                    if not got.get("ok"):
                        return pb_utils.InferenceResponse(error=pb_utils.TritonError(got.get("error", "BLS request failed"))), True
                    if got.get("done"):
                        return None
                    if "error" in got:
                        return pb_utils.InferenceResponse(error=pb_utils.TritonError(got["error"])), bool(got.get("final"))
                    return pb_utils.InferenceResponse(self.copy_outputs(got["outputs"])), bool(got.get("final"))

            def cancel():
                with self.lock:
                    self.ask({"op": "cancel", "stream": stream})

            return pb_utils.ResponseIterator(next_response, cancel)
        return pb_utils.InferenceResponse(self.copy_outputs(reply["outputs"]))

    def call_model(self, model, arrays):
        """Runs model `model` (its declared file) of the servable on numpy
        arrays, in the model's input order, on this replica (MindSpore's
        `Model.call`): its outputs, numpy arrays in model order. Raises
        RuntimeError with the server's reason."""
        with self.lock:
            return self._call_model(model, arrays)

    def _call_model(self, model, arrays):
        tensors = [pb_utils.Tensor(str(k), np.asarray(a)) for k, a in enumerate(arrays)]
        try:
            described, end = self.place(tensors)
        except pb_utils.TritonModelException as e:
            raise RuntimeError(str(e)) from None
        reply = self.ask({"op": "call_model", "model": model, "inputs": described, "at": end})
        if not reply.get("ok"):
            raise RuntimeError(reply.get("error", "the model call failed"))
        return [t.as_numpy() for t in self.copy_outputs(reply["outputs"])]

    def ask(self, message):
        """Sends a BLS message and returns the server's answer, mapping the
        larger regions it makes meanwhile."""
        send(message)
        while True:
            reply = receive()
            if reply is None:
                raise SystemExit(0)
            if reply.get("op") == "region":
                self.map(reply["path"], reply["size"])
                self.free_from = 0
                send({"ok": True})
                continue
            return reply

    def copy_outputs(self, outputs):
        """Tensors of the outputs the server wrote into the region, copied
        out of it (the region is reused)."""
        tensors = []
        for o in outputs:
            if o["datatype"] == "BYTES":
                array = pb_utils.deserialize_bytes_tensor(
                    bytes(memoryview(self.region)[o["offset"]:o["offset"] + o["size"]])).reshape(o["shape"])
            else:
                bf16 = o["datatype"] == "BF16"
                dtype = np.uint16 if bf16 else pb_utils._OIP_TO_NUMPY[o["datatype"]]
                count = o["size"] // np.dtype(dtype).itemsize
                array = np.frombuffer(self.region, dtype=dtype, count=count, offset=o["offset"]).reshape(o["shape"]).copy()
            tensors.append(pb_utils.Tensor(o["name"], array, "BF16" if o["datatype"] == "BF16" else None))
        return tensors

    def await_region(self):
        """The server's answer to a "need": a larger region to map, or
        its refusal (the server has no memory for it), raised."""
        reply = receive()
        if reply is None or reply.get("op") != "region":
            raise SystemExit(0)
        if "refused" in reply:
            raise pb_utils.TritonModelException(reply["refused"])
        self.map(reply["path"], reply["size"])
        send({"ok": True})

    def write(self, offset, data, size):
        """Writes `size` bytes of `data` (bytes, or a contiguous array)
        into the region at `offset`."""
        if isinstance(data, bytes):
            memoryview(self.region)[offset:offset + size] = data
        elif size:
            dst = np.frombuffer(self.region, dtype=np.uint8, count=size, offset=offset)
            dst[:] = data.reshape(-1).view(np.uint8)

    def offset_in_region(self, array):
        """Where a C-contiguous array lies in the region, None if elsewhere."""
        if self.region is None or array.nbytes == 0 or not array.flags["C_CONTIGUOUS"]:
            return None
        at = array.__array_interface__["data"][0] - self.base
        if 0 <= at and at + array.nbytes <= self.size:
            return at
        return None

    # -- the model -------------------------------------------------------------

    def load(self, model_file, model_dir):
        if model_dir not in sys.path:
            sys.path.insert(0, model_dir)
        spec = importlib.util.spec_from_file_location("serving_model", model_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "TritonPythonModel"):
            raise pb_utils.TritonModelException(f"{model_file} defines no class TritonPythonModel")
        self.module = module
        self.model = module.TritonPythonModel()

    def servable_config(self, config_file, servable):
        """Imports a MindSpore servable_config.py, which registers its
        models and methods with our mindspore_serving; returns that
        registration module."""
        from mindspore_serving.server import register
        register._servable["name"] = servable
        directory = os.path.dirname(os.path.abspath(config_file))
        for p in (os.path.dirname(directory), directory):
            if p not in sys.path:
                sys.path.insert(0, p)
        spec = importlib.util.spec_from_file_location("servable_config", config_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return register

    def load_stage(self, message):
        import serving_mindspore_stage
        register = self.servable_config(message["config_file"], message["servable"])
        key = (message["method"], message["stage"])
        if key not in register._stage_functions:
            raise pb_utils.TritonModelException(
                f"servable_config.py registers no Python stage {message['stage']} in method '{message['method']}' "
                "any more: reload the servable")
        function, batch_size, tag, inputs, outputs = register._stage_functions[key]
        self.model = serving_mindspore_stage.Stage(message["servable"], message["method"], message["stage"],
                                                   function, batch_size, tag, inputs, outputs)

    def forward(self, n, response, final):
        """Hands one response of a decoupled model to the server now, from
        whichever thread the model sent it (one exchange at a time): its
        outputs written into the region's free space, which the server
        copies them out of before it answers."""
        with self.lock:
            message = {"op": "response", "request": n, "final": final}
            if response is not None and response.has_error():
                e = response.error()
                message["error"] = e.message() if hasattr(e, "message") else str(e)
            elif response is not None:
                start = self.free_from
                described, needed = self.write_outputs([response], start)
                if described is None:
                    send({"op": "need", "bytes": needed})
                    self.await_region()
                    described, needed = self.write_outputs([response], start)
                    if described is None:
                        raise pb_utils.TritonModelException(
                            f"a response needs {needed} bytes of shared memory; the region holds {self.size}")
                message["outputs"] = described[0]
            send(message)
            reply = receive()
            if reply is None:
                raise SystemExit(0)

    def collect(self, sent, count):
        """The one response each request's sender sent (a model that is not
        decoupled and answers through the senders)."""
        got = {}
        while len(got) < count:
            n, response, final = sent.get()
            if response is not None:
                if n in got:
                    raise pb_utils.TritonModelException(
                        "a model that is not decoupled sends one response per request")
                got[n] = response
            if final and n not in got:
                raise pb_utils.TritonModelException(
                    "a model that is not decoupled sends one response per request, before the final flag")
        return got

    def auto_complete(self, config):
        cls = self.module.TritonPythonModel
        if not hasattr(cls, "auto_complete_config"):
            return config
        completed = cls.auto_complete_config(pb_utils.ModelConfig(config))
        if not isinstance(completed, pb_utils.ModelConfig):
            raise pb_utils.TritonModelException(
                "auto_complete_config must return the ModelConfig it was given")
        return completed.as_dict()

    def execute(self, message):
        requests = []
        end = 0
        for r in message["requests"]:
            inputs = [self.input(spec) for spec in r["inputs"]]
            for spec in r["inputs"]:
                end = max(end, spec["offset"] + spec["size"])
            requests.append(pb_utils.InferenceRequest(
                requested_output_names=r.get("requested_outputs", []), inputs=inputs,
                request_id=r.get("id", ""), parameters=r.get("parameters", {}),
                correlation_id=r.get("correlation_id", 0), flags=r.get("flags", 0)))
        # BLS requests lay their tensors out after the inputs (or from 0 in
        # a region the server grew meanwhile).
        self.free_from = align(end)
        sent = self.sent
        while not sent.empty():
            sent.get_nowait()
        forwarder = Forwarder(self, len(requests)) if self.decoupled else None
        for n, r in enumerate(requests):
            r._sender = pb_utils.ResponseSender(n, forwarder or sent)
        responses = self.model.execute(requests)
        if self.decoupled:
            # Each response went to the server as it was sent, during
            # execute or after, from any thread: wait for every request's
            # last.
            forwarder.wait()
            return []
        if responses is None and sent.empty():
            raise pb_utils.TritonModelException(
                "execute returned None: a model that is not decoupled returns one InferenceResponse per request "
                "(or sends each through request.get_response_sender())")
        if responses is None:
            # A model that is not decoupled may answer through the senders,
            # once each.
            got = self.collect(sent, len(requests))
            responses = [got[n] for n in range(len(requests))]
        if not isinstance(responses, (list, tuple)) or len(responses) != len(requests):
            got = len(responses) if isinstance(responses, (list, tuple)) else type(responses).__name__
            raise pb_utils.TritonModelException(
                f"execute must return one InferenceResponse per request: {len(requests)} requests, got {got}")
        for r in responses:
            if not isinstance(r, pb_utils.InferenceResponse):
                raise pb_utils.TritonModelException(
                    f"execute must return InferenceResponse objects, got {type(r).__name__}")
        start = align(end)
        with self.lock:
            described, needed = self.write_outputs(responses, start)
            if described is None:
                # The region is too small: ask for one that holds the
                # outputs, then write them there (the inputs are no longer
                # needed).
                send({"op": "need", "bytes": needed})
                self.await_region()
                described, needed = self.write_outputs(responses, start)
                if described is None:
                    raise pb_utils.TritonModelException(
                        f"the outputs need {needed} bytes of shared memory; the region holds {self.size}")
        answers = []
        for r, outputs in zip(responses, described):
            if r.has_error():
                e = r.error()
                answers.append({"error": e.message() if hasattr(e, "message") else str(e)})
            else:
                answers.append({"outputs": outputs})
        return answers


def exit_with_server():
    """Ends the worker when its server is gone, even while the model is
    busy (a server killed outright closes the control channel, which a
    worker inside execute would not read): checked every second."""
    server = os.getppid()
    while True:
        time.sleep(1)
        if os.getppid() != server:
            os._exit(0)


def main():
    threading.Thread(target=exit_with_server, name="exit-with-server", daemon=True).start()
    worker = Worker()
    pb_utils._bls = worker.bls
    pb_utils._call_model = worker.call_model
    while True:
        message = receive()
        if message is None:
            return
        op = message.get("op")
        try:
            if op == "region":
                worker.map(message["path"], message["size"])
                send({"ok": True})
            elif op == "load":
                worker.load(message["model_file"], message["model_dir"])
                worker.decoupled = bool(message.get("decoupled"))
                send({"ok": True})
            elif op == "register":
                register = worker.servable_config(message["config_file"], message["servable"])
                send({"ok": True, "plan": register._plan()})
            elif op == "load_stage":
                worker.load_stage(message)
                send({"ok": True})
            elif op == "auto_complete":
                send({"ok": True, "config": worker.auto_complete(message["config"])})
            elif op == "initialize":
                if hasattr(worker.model, "initialize"):
                    worker.model.initialize(message["args"])
                send({"ok": True})
            elif op == "execute":
                send({"ok": True, "responses": worker.execute(message)})
            elif op == "finalize":
                if worker.model is not None and hasattr(worker.model, "finalize"):
                    worker.model.finalize()
                send({"ok": True})
                return
            else:
                send({"ok": False, "error": f"unknown operation {op!r}"})
        except pb_utils.TritonModelException as e:
            send({"ok": False, "error": str(e)})
        except Exception:  # noqa: BLE001  the model's failure, reported to the server
            send({"ok": False, "error": traceback.format_exc(limit=8)})


if __name__ == "__main__":
    main()
