"""Reads a decoupled model's responses (the `repeat` model of
tests/python_models.rs) with NVIDIA's tritonclient gRPC stream, as Triton
users read them: several responses per request, the final flag, the empty
final response when asked for, an error response in-band.

Usage: decoupled_stream.py GRPC_ADDR
"""

import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    client = grpcclient.InferenceServerClient(url=sys.argv[1])
    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))

    def send(request_id, values, empty_final):
        x = grpcclient.InferInput("IN", [len(values)], "INT32")
        x.set_data_from_numpy(np.array(values, dtype=np.int32))
        client.async_stream_infer("repeat", [x], request_id=request_id,
                                  enable_empty_final_response=empty_final)

    send("x", [1, 2, 3, 4], True)
    got = []
    while True:
        result, error = results.get(timeout=60)
        check(error is None, f"no error ({error})")
        response = result.get_response()
        final = response.parameters["triton_final_response"].bool_param
        out = result.as_numpy("OUT")
        got.append((None if out is None else int(out[0]), final))
        if final:
            break
    check(got == [(1, False), (2, False), (3, False), (4, False), (None, True)],
          f"four responses, then the empty final one: {got}")
    send("y", [-1], False)
    result, error = results.get(timeout=60)
    check(error is not None and "negative: -1" in str(error), f"an error response in-band: {error}")
    client.stop_stream()
    print("decoupled stream agrees")


if __name__ == "__main__":
    main()
