"""Fuzz: a few hundred generated bad requests over gRPC and REST (issue 16).

Every answer must come within a deadline and be of the client-error classes
(REST 4xx; gRPC INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED and the other
400-class codes), never naming a Python exception type; the server must stay up
and answer a good request afterwards. Mutations of a valid request may stay
valid, so they may also be answered OK. Seeded: the same requests every run.
"""

import json
import random
import re
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)
from test_serving import HISTORIES, VOCABULARY, make_model, running_server

from hybrid_tfrs.export import export_saved_model
from hybrid_tfrs.serving.client import GrpcClient, RestClient, history_array

GRPC_CASES, REST_CASES, STALLED_BODIES = 200, 200, 3
READ_TIMEOUT_S, DEADLINE_S = 0.5, 5.0
CLIENT_ERRORS = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "OUT_OF_RANGE",
}
PYTHON_TYPE_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")
SERVICE = "/tensorflow.serving."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    export_saved_model(make_model(seed=1), VOCABULARY, str(root / "models"), "hybrid", version=1)
    flags = (
        f"--rest_read_timeout_seconds={READ_TIMEOUT_S}",
        "--max_rows_per_request=64",
        "--max_tensor_elements=10000",
        "--rest_max_body_bytes=100000",
        "--grpc_max_message_bytes=100000",
        "--enable_batching",
    )
    log_path = root / "server.log"
    with running_server(
        root / "models" / "hybrid", log_path, *flags, module="hybrid_tfrs.serving.server"
    ) as (process, grpc_port, rest_port):
        yield process, grpc_port, rest_port
    assert "Traceback" not in log_path.read_text()


def random_text(rng):
    alphabet = ["i1", "i7", "hybrid", "", "\x00", "é", "\ud800", "/", ":", "recommend", "k"]
    pick = rng.random()
    if pick < 0.1:
        return "x" * rng.choice([300, 5000, 70000])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))


def random_json(rng, depth=0):
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 3, 2**31, 2**63, -(2**70), 10**400])
    if kind == 2:
        return rng.choice([0.5, -1e308, 1e308])
    if kind in (3, 4):
        return random_text(rng)
    if kind in (5, 6):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == 7:
        return {"b64": rng.choice(["aGk=", "!!", 5])}
    keys = ["signature_name", "inputs", "instances", "history", "k", "examples", random_text(rng)]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def valid_predict():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hybrid"
    request.model_spec.signature_name = "recommend"
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history_array(HISTORIES)))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.int32(3)))
    return request


def bad_tensor(rng):
    tensor = (
        tf.make_tensor_proto(history_array(HISTORIES[:1]))
        if rng.random() < 0.5
        else (tf.make_tensor_proto(np.int32(3)))
    )
    choice = rng.randrange(5)
    if choice == 0:
        tensor.dtype = rng.choice([0, 7, 20, 21, 23, 100, 1000])
    elif choice == 1:
        del tensor.tensor_shape.dim[:]
        for _ in range(rng.randint(1, 40)):
            tensor.tensor_shape.dim.add(size=rng.choice([-5, -1, 0, 1, 2, 10**6, 2**62]))
    elif choice == 2:
        tensor.tensor_shape.unknown_rank = True
    elif choice == 3:
        size = rng.choice([1, 3, 5, 7, 9, 33])  # never a whole number of int32 values
        tensor.tensor_content = bytes(rng.randrange(256) for _ in range(size))
    else:
        tensor.string_val.extend([b"\xff" * rng.randint(0, 5)] * rng.randint(1, 3))
    return tensor


def grpc_case(rng):
    """(method, serialized request, may be valid)."""
    valid = valid_predict().SerializeToString()
    choice = rng.randrange(6)
    if choice == 0:
        return "PredictionService/Predict", rng.randbytes(rng.randint(0, 200)), False
    if choice == 1:
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        return "PredictionService/Predict", bytes(mutated), True
    if choice == 2:
        request = valid_predict()
        request.inputs[rng.choice(["history", "k", "nope"])].CopyFrom(bad_tensor(rng))
        return "PredictionService/Predict", request.SerializeToString(), False
    if choice == 3:
        request = valid_predict()
        field = rng.choice(["name", "signature_name", "version_label", "version"])
        if field == "version":
            request.model_spec.version.value = rng.choice([-1, 7, 2**62])
        else:
            setattr(request.model_spec, field, random_text(rng).encode("utf-8", "replace").decode())
        drawn = getattr(request.model_spec, field) if field != "version" else None
        may_be_valid = drawn in ("", "hybrid", "recommend")  # an empty label means none
        return "PredictionService/Predict", request.SerializeToString(), may_be_valid
    if choice == 4:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = rng.choice(["hybrid", "nope", "x" * 70000])
        request.metadata_field.extend(rng.choice([[], ["nope"], ["signature_def", "x"]]))
        return "PredictionService/GetModelMetadata", request.SerializeToString(), False
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = rng.choice(["nope", "y" * 100000])
    request.model_spec.version.value = rng.choice([0, 9, -3])
    return "ModelService/GetModelStatus", request.SerializeToString(), False


def rest_case(rng):
    """(raw request bytes, may be valid)."""
    paths = [
        "/v1/models/hybrid:predict",
        "/v1/models/hybrid/versions/1:predict",
        f"/v1/models/hybrid/versions/{random_text(rng)}:predict",
        f"/v1/models/{random_text(rng)}:predict",
        "/v1/models/hybrid/labels/stable:predict",
        "/v1/models/hybrid/metadata",
        "/v1/models/hybrid/versions/99",
        "/v1/nothing",
        "/" + random_text(rng),
    ]
    path = rng.choice(paths).encode("utf-8", "replace").decode("latin-1", "replace")
    path = re.sub(r"[\s\x00]", "_", path)[:2000] or "/"
    method = rng.choice(["GET", "POST", "POST", "POST", "PUT", "DELETE"])
    valid = {"signature_name": "recommend", "inputs": {"history": HISTORIES, "k": 3}}
    choice = rng.randrange(4)
    may_be_valid = False
    if choice == 0:
        body = rng.randbytes(rng.randint(0, 300))
    elif choice == 1:
        body = json.dumps(random_json(rng)).encode()
    elif choice == 2:
        body = bytearray(json.dumps(valid).encode())
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] = rng.randrange(32, 127)
        body, may_be_valid = bytes(body), True
    else:
        valid["signature_name" if rng.random() < 0.3 else "inputs"] = random_json(rng)
        body = json.dumps(valid).encode()
    length = str(len(body))
    header_choice = rng.randrange(8)
    if header_choice == 0:
        length = rng.choice(["-1", "abc", "", "1e9", str(2**70), "12 34", "8589934592"])
    elif header_choice == 1:
        length = str(len(body) // 2)  # the rest is read as the next request
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
    if rng.random() < 0.05:
        head += "Transfer-Encoding: chunked\r\n"
    may_be_valid |= method == "GET"  # status and metadata ignore a body
    return head.encode("latin-1") + b"\r\n" + body, may_be_valid


def rest_status(port, raw):
    """The status of the first answer to ``raw``, and its body; fails past DEADLINE_S."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer to {raw[:200]!r}"
            data += chunk
    header, body = data.split(b"\r\n\r\n", 1)
    return int(header.split()[1]), body


def test_fuzzed_requests_get_client_error_codes_in_time(server):
    process, grpc_port, rest_port = server
    rng = random.Random(16)
    outside, slow, seen = [], [], set()
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        for index in range(GRPC_CASES):
            method, payload, may_be_valid = grpc_case(rng)
            started = time.monotonic()
            try:
                channel.unary_unary(SERVICE + method)(payload, timeout=DEADLINE_S)
                code, details = "OK", ""
            except grpc.RpcError as error:
                code, details = error.code().name, error.details() or ""
            seen.add(code)
            if time.monotonic() - started > DEADLINE_S:
                slow.append(("grpc", index))
            allowed = CLIENT_ERRORS | ({"OK"} if may_be_valid else set())
            if code not in allowed or PYTHON_TYPE_NAME.search(details):
                outside.append(("grpc", index, method, code, details[:200]))
            assert process.poll() is None, f"server died on grpc case {index}"
    for index in range(REST_CASES):
        raw, may_be_valid = rest_case(rng)
        started = time.monotonic()
        status, body = rest_status(rest_port, raw)
        if time.monotonic() - started > DEADLINE_S:
            slow.append(("rest", index))
        seen.add(status)
        if not (400 <= status < 500 or (may_be_valid and status == 200)) or (
            PYTHON_TYPE_NAME.search(body.decode("utf-8", "replace"))
        ):
            outside.append(("rest", index, raw[:120], status, body[:200]))
        assert process.poll() is None, f"server died on rest case {index}"
    for _ in range(STALLED_BODIES):  # a body that never comes
        started = time.monotonic()
        status, _ = rest_status(
            rest_port, b"POST /v1/models/hybrid:predict HTTP/1.1\r\nContent-Length: 50\r\n\r\n{"
        )
        assert status == 408 and time.monotonic() - started < READ_TIMEOUT_S + 1.0
    assert not outside, outside[:5]
    assert not slow, slow[:5]
    assert {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", 400, 404, 413} <= seen, seen
    with GrpcClient(f"127.0.0.1:{grpc_port}", "hybrid", timeout=30) as client:
        assert client.recommend(HISTORIES[:1], k=2).item_ids
    with RestClient(f"http://127.0.0.1:{rest_port}", "hybrid", timeout=30) as client:
        assert client.recommend(HISTORIES[:1], k=2).item_ids
