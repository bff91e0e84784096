"""Serving under bad input: size limits, timeouts, status codes, hang-ups (issue 16).

One server runs with small limits (a 1 s read timeout, 64 rows, 100k values,
1 MB messages and bodies); requests are built by hand, below the client, so
that they can lie about their size or stop half-way.
"""

import concurrent.futures
import http.server
import json
import re
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from test_serving import HISTORIES, VOCABULARY, make_model, running_server

from hybrid_tfrs.export import export_saved_model
from hybrid_tfrs.serving import ServingError
from hybrid_tfrs.serving.batching import Batcher
from hybrid_tfrs.serving.client import GrpcClient, RestClient, history_array
from hybrid_tfrs.serving.core import Admission

READ_TIMEOUT_S, MAX_ROWS, MAX_ELEMENTS, MAX_BYTES = 1.0, 64, 100_000, 1_000_000
PREDICT = "/tensorflow.serving.PredictionService/Predict"
PYTHON_TYPE_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")


class Server:
    def __init__(self, process, grpc_port, rest_port, log_path):
        self.process = process
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.rest_port = rest_port
        self.rest_url = f"http://127.0.0.1:{rest_port}"
        self.log_path = log_path
        self.channel = grpc.insecure_channel(self.grpc_target)

    def memory_kib(self):
        """(resident, virtual) KiB of the server process."""
        with open(f"/proc/{self.process.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]), int(fields["VmSize"].split()[0])

    def raw_grpc(self, payload, method=PREDICT):
        """Sends serialized bytes; -> (status code name, details)."""
        call = self.channel.unary_unary(method)
        try:
            call(payload, timeout=10)
        except grpc.RpcError as error:
            return error.code().name, error.details()
        return "OK", ""

    def assert_serving(self):
        with GrpcClient(self.grpc_target, "hybrid", timeout=30) as client:
            assert client.recommend(HISTORIES[:1], k=2).item_ids
        with RestClient(self.rest_url, "hybrid", timeout=30) as client:
            assert client.recommend(HISTORIES[:1], k=2).item_ids


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    export_saved_model(make_model(seed=1), VOCABULARY, str(root / "models"), "hybrid", version=1)
    flags = (
        f"--rest_read_timeout_seconds={READ_TIMEOUT_S}",
        f"--max_rows_per_request={MAX_ROWS}",
        f"--max_tensor_elements={MAX_ELEMENTS}",
        f"--rest_max_body_bytes={MAX_BYTES}",
        f"--grpc_max_message_bytes={MAX_BYTES}",
        "--enable_batching",
    )
    log_path = root / "server.log"
    with running_server(
        root / "models" / "hybrid", log_path, *flags, module="hybrid_tfrs.serving.server"
    ) as (process, grpc_port, rest_port):
        started = Server(process, grpc_port, rest_port, log_path)
        yield started
        started.channel.close()
    assert "Traceback" not in log_path.read_text()


def predict_request(inputs, signature="recommend", model="hybrid"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    return request.SerializeToString()


def string_tensor(dims, values):
    proto = tf.make_tensor_proto(np.array(values, dtype=object))
    del proto.tensor_shape.dim[:]
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


K = tf.make_tensor_proto(np.int32(3))


# ------------------------------------------------------------- claimed sizes


def test_grpc_tensor_claiming_250m_values_is_refused_at_once_without_memory(server):
    payload = predict_request({"history": string_tensor([1, 250_000_000], [b"i1"]), "k": K})
    assert len(payload) < 100
    rss_before, _ = server.memory_kib()
    started = time.monotonic()
    code, details = server.raw_grpc(payload)
    elapsed = time.monotonic() - started
    rss_growth_mb = (server.memory_kib()[0] - rss_before) / 1024
    assert code == "INVALID_ARGUMENT", details
    assert "declares 250000000 values" in details and "--max_tensor_elements" in details
    assert elapsed < 1.0 and rss_growth_mb < 50, (elapsed, rss_growth_mb)


@pytest.mark.parametrize(
    "dims, values, expected",
    [
        ([-1, 2], [b"i1", b"i2"], "negative dimension"),
        ([2, 2], [b"i1"], "declares 4 values, the request holds 1"),
        ([1, 1], [b"i1", b"i2"], "declares 1 values, the request holds 2"),
    ],
)
def test_grpc_tensor_whose_shape_and_values_disagree_is_invalid(server, dims, values, expected):
    code, details = server.raw_grpc(
        predict_request({"history": string_tensor(dims, values), "k": K})
    )
    assert (code, expected in details) == ("INVALID_ARGUMENT", True), details


def test_grpc_garbage_message_and_oversized_message(server):
    assert server.raw_grpc(b"\xff\xff\xff garbage")[0] == "INVALID_ARGUMENT"
    big = predict_request({"history": string_tensor([1, 1], [b"x" * (MAX_BYTES + 10)]), "k": K})
    started = time.monotonic()
    assert server.raw_grpc(big)[0] == "RESOURCE_EXHAUSTED"
    # 16 MiB really travel over loopback first: a bound against hanging, not a speed test.
    assert time.monotonic() - started < 10.0
    server.assert_serving()


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_rows_per_request_are_capped(server, transport):
    client_class, where = (
        (GrpcClient, server.grpc_target) if transport == "grpc" else (RestClient, server.rest_url)
    )
    with client_class(where, "hybrid", timeout=30) as client:
        assert len(client.recommend([["i1"]] * MAX_ROWS, k=2).item_ids) == MAX_ROWS
        with pytest.raises(ServingError) as caught:
            client.recommend([["i1"]] * (MAX_ROWS + 1), k=2)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert f"at most {MAX_ROWS} (--max_rows_per_request)" in caught.value.message


# ------------------------------------------------------------- REST bodies


def http_exchange(port, head, body=b"", wait_s=5.0):
    """Sends a request (head without the blank line, then body); -> (status, JSON, closed).

    ``closed``: the server closed the connection after answering.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        header, rest = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"Content-Length: (\d+)", header).group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return int(header.split()[1]), json.loads(rest[:length]), closed


def post_head(length_header, path="/v1/models/hybrid:predict"):
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{length_header}"


@pytest.mark.parametrize("length", [8 * 2**30, 10**12])
def test_rest_body_over_the_limit_is_refused_unread(server, length):
    rss_before, virtual_before = server.memory_kib()
    started = time.monotonic()
    status, body, closed = http_exchange(
        server.rest_port, post_head(f"Content-Length: {length}"), b"{}"
    )
    elapsed = time.monotonic() - started
    rss_after, virtual_after = server.memory_kib()
    assert status == 413 and closed
    assert f"at most {MAX_BYTES} (--rest_max_body_bytes)" in body["error"]
    assert elapsed < 1.0
    assert (rss_after - rss_before) / 1024 < 50 and (virtual_after - virtual_before) / 1024 < 200


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_rest_other_methods_are_405(server, method):
    head = f"{method} /v1/models/hybrid HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2"
    status, body, closed = http_exchange(server.rest_port, head, b"{}")
    assert (status, closed) == (405, True) and "not allowed" in body["error"]


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", " "])
def test_rest_content_length_not_a_count_is_400(server, length):
    status, body, closed = http_exchange(server.rest_port, post_head(f"Content-Length: {length}"))
    assert status == 400 and closed
    assert "Content-Length must be a non-negative integer" in body["error"]


def test_rest_stalled_body_is_answered_408_and_closed_within_the_read_timeout(server):
    started = time.monotonic()
    status, body, closed = http_exchange(
        server.rest_port, post_head("Content-Length: 100"), b'{"inputs":'
    )
    elapsed = time.monotonic() - started
    assert status == 408 and closed and "--rest_read_timeout_seconds" in body["error"]
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 1.5


def test_rest_idle_connection_is_closed_after_the_read_timeout(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/models/hybrid:predict HTTP/1.1\r\n")  # headers never end
        assert sock.recv(1024) == b""
    assert time.monotonic() - started < READ_TIMEOUT_S + 1.5


# ------------------------------------------------------------- REST codes


def rest_predict(server, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(f"{server.rest_url}/v1/models/hybrid:predict", data=data, timeout=30)
    return response.status_code, response.json()


BAD_REST_BODIES = {  # case: (body, what the error says)
    "signature_name a list": (
        {"signature_name": ["recommend"], "inputs": {}},
        "signature_name must be a string",
    ),
    "signature_name an object": (
        {"signature_name": {"a": 1}, "inputs": {}},
        "signature_name must be a string",
    ),
    "lone surrogate": (  # json.dumps escapes it: the body is ASCII
        {"signature_name": "recommend", "inputs": {"history": [["\ud800"]], "k": 3}},
        "lone surrogate",
    ),
    "JSON nested 5000 deep": (
        b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "nested too deeply",
    ),
    "lists nested 40 deep": (
        {
            "signature_name": "recommend",
            "inputs": {"history": json.loads("[" * 40 + '"i1"' + "]" * 40), "k": 3},
        },
        "nested deeper than 32",
    ),
    "k out of int32": (
        {"signature_name": "recommend", "inputs": {"history": [["i1"]], "k": 2**40}},
        "is not of expected type DT_INT32",
    ),
    "not UTF-8": (b'{"inputs": "\xff\xfe"}', "JSON parse error"),
    "both formats": ({"inputs": {}, "instances": []}, 'either "inputs"'),
    "instances empty": ({"signature_name": "recommend", "instances": []}, "non-empty list"),
    "instances with different k": (
        {
            "signature_name": "recommend",
            "instances": [{"history": ["i1"], "k": 2}, {"history": ["i2"], "k": 3}],
        },
        "the same value",
    ),
}


@pytest.fixture(scope="module")
def recommend_extra(server):
    """Inputs the served recommend signature takes besides history and k (exclude_history)."""
    with RestClient(server.rest_url, "hybrid", timeout=30) as client:
        inputs = client.metadata()["signatures"]["recommend"]["inputs"]
    return {"exclude_history": False} if "exclude_history" in inputs else {}


def with_extra(body, extra):
    """A recommend request body with the ``extra`` inputs added (columnar or rows)."""
    if not isinstance(body, dict) or body.get("signature_name") != "recommend":
        return body
    if isinstance(body.get("inputs"), dict):
        return dict(body, inputs={**body["inputs"], **extra})
    return dict(body, instances=[{**row, **extra} for row in body["instances"]])


@pytest.mark.parametrize("case", sorted(BAD_REST_BODIES))
def test_rest_bad_bodies_are_400_with_a_clean_message(server, recommend_extra, case):
    request, expected = BAD_REST_BODIES[case]
    status, body = rest_predict(server, with_extra(request, recommend_extra))
    assert status == 400, body
    assert set(body) == {"error"} and expected in body["error"], body
    assert not PYTHON_TYPE_NAME.search(body["error"]), body


@pytest.mark.parametrize("garbage", [b"\xff\x00 not a tf.Example", b"not a tf.Example"])
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_garbage_tf_example_is_invalid_argument(server, transport, garbage):
    client_class, where = (
        (GrpcClient, server.grpc_target) if transport == "grpc" else (RestClient, server.rest_url)
    )
    examples = np.array([garbage], dtype=object)
    with client_class(where, "hybrid", timeout=30) as client:
        with pytest.raises(ServingError) as caught:
            client.predict({"examples": examples}, "serving_default")
    assert caught.value.code == "INVALID_ARGUMENT", caught.value
    assert not PYTHON_TYPE_NAME.search(caught.value.message)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_huge_model_name_is_clipped_in_the_error(server, transport):
    name = "m" * (100_000 if transport == "grpc" else 10_000)
    client_class, where = (
        (GrpcClient, server.grpc_target) if transport == "grpc" else (RestClient, server.rest_url)
    )
    with client_class(where, name, timeout=30) as client:
        with pytest.raises(ServingError) as caught:
            client.recommend(HISTORIES, k=2)
    assert caught.value.code == "NOT_FOUND"
    assert "(10000 characters)" in caught.value.message or "(100000 characters)" in (
        caught.value.message
    )
    assert len(caught.value.message) < 1000


def test_rest_row_format_answers_as_the_columnar_one(server, recommend_extra):
    histories = [["i1", "i2", "i3"], ["i7"]]
    with RestClient(server.rest_url, "hybrid", timeout=30) as client:
        columnar = client.recommend(histories, k=4)
    status, body = rest_predict(
        server,
        with_extra(
            {
                "signature_name": "recommend",
                "instances": [{"history": h, "k": 4} for h in histories],
            },
            recommend_extra,
        ),
    )
    assert status == 200, body
    assert [row["item_ids"] for row in body["predictions"]] == columnar.item_ids
    np.testing.assert_allclose(
        [row["scores"] for row in body["predictions"]], columnar.scores, rtol=1e-6
    )
    status, body = rest_predict(
        server, {"signature_name": "query_embedding", "instances": [["i1"]]}
    )
    assert status == 200 and np.asarray(body["predictions"]).shape[0] == 1


# ------------------------------------------------------------- hang-ups


def test_a_client_hanging_up_early_is_one_quiet_log_line(server):
    body = json.dumps(
        {"signature_name": "recommend", "inputs": {"history": [["i1"]] * MAX_ROWS, "k": 10}}
    ).encode()
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=5)
        sock.sendall(post_head(f"Content-Length: {len(body)}").encode() + b"\r\n\r\n" + body)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # reset before the answer
    gave_up = 0
    # gRPC: the client's deadline passes before the answer. How many calls beat a
    # given deadline depends on the machine's load, so the deadlines shrink to one
    # that no answer can meet.
    for timeout in (0.005, 0.002, 0.0005, 1e-6):
        with GrpcClient(server.grpc_target, "hybrid", timeout=timeout) as impatient:
            for _ in range(3):
                try:
                    impatient.recommend([["i1"]] * MAX_ROWS, k=10)
                except ServingError:
                    gave_up += 1
    assert gave_up >= 3
    deadline = time.monotonic() + 30
    while server.log_path.read_text().count("hung up") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    log_text = server.log_path.read_text()
    assert log_text.count("rest: client 127.0.0.1 hung up") == 3
    assert "Traceback" not in log_text and "Exception" not in log_text
    server.assert_serving()


# ------------------------------------------------------------- queue and batcher


def test_admission_queue_is_bounded_and_waits_are_timed():
    admission = Admission(max_running=1, max_queued=1, timeout_s=2.0)
    outcomes, entered = [], threading.Event()

    def wait_for_slot():
        try:
            with admission:
                outcomes.append("ran")
        except ServingError as error:
            outcomes.append(error.code)

    with admission:  # the one slot is taken
        waiter = threading.Thread(target=wait_for_slot)
        waiter.start()
        deadline = time.monotonic() + 5
        while admission._waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(ServingError) as caught:
            with admission:
                entered.set()
        assert caught.value.code == "RESOURCE_EXHAUSTED" and "--max_queued_requests" in (
            caught.value.message
        )
        # Refused at once, not after the 2 s wait a queued request would get.
        assert time.monotonic() - started < 1.0 and not entered.is_set()
        waiter.join(timeout=5)
    assert outcomes == ["DEADLINE_EXCEEDED"]
    with admission:  # the slot is free again
        pass


class BlockingSignature:
    """Returns each row's first value once ``release`` is set."""

    batch_inputs = ("history",)

    def __init__(self):
        self.release = threading.Event()

    def run(self, inputs):
        self.release.wait(timeout=10)
        return {"first": inputs["history"][:, 0]}


def call_in_thread(batcher, signature, history):
    result = {}

    def call():
        try:
            result["value"] = batcher.run(signature, {"history": history})
        except Exception as error:  # noqa: BLE001 (checked by the test)
            result["value"] = error

    thread = threading.Thread(target=call)
    thread.start()
    return thread, result


def test_batcher_times_out_a_waiting_caller_and_survives_a_merge_error():
    batcher = Batcher(max_batch_size=8, timeout_s=0.05, request_timeout_s=0.5)
    try:
        slow = BlockingSignature()
        thread, result = call_in_thread(batcher, slow, np.array([[b"a"]], dtype=object))
        thread.join(timeout=5)
        assert isinstance(result["value"], ServingError)
        assert result["value"].code == "DEADLINE_EXCEEDED"
        slow.release.set()

        # Rows of different ranks cannot be merged: both fail, the batcher lives on.
        fast = BlockingSignature()
        fast.release.set()
        batcher.timeout_s = 0.3
        calls = [
            call_in_thread(batcher, fast, np.array([[b"a"]], dtype=object)),
            call_in_thread(batcher, fast, np.array([[[b"b"]]], dtype=object)),
        ]
        for thread, result in calls:
            thread.join(timeout=5)
            assert isinstance(result.get("value"), Exception)  # answered, not hanging
        batcher.timeout_s = 0.0
        thread, result = call_in_thread(batcher, fast, np.array([[b"c"]], dtype=object))
        thread.join(timeout=5)
        assert result["value"]["first"].tolist() == [b"c"]
    finally:
        batcher.stop()


def test_error_messages_name_no_python_exception_type(server):
    for payload in (
        predict_request({"history": string_tensor([1, 2], [b"i1", b"i2"])}),  # k missing
        predict_request({"history": history_proto([["i1"]]), "k": K}, signature=""),
        b"\x0a\x05",
    ):
        code, details = server.raw_grpc(payload)
        assert code == "INVALID_ARGUMENT" and not PYTHON_TYPE_NAME.search(details), details


def history_proto(histories):
    return tf.make_tensor_proto(history_array(histories))


class _FlakyRest(http.server.BaseHTTPRequestHandler):
    """Answers the first ``busy`` requests 503 (UNAVAILABLE), then one embedding."""

    busy, calls = 0, 0

    def do_POST(self):
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        failing = type(self).calls <= type(self).busy
        body = {"error": "restarting"} if failing else {"outputs": {"embedding": [[1.0, 2.0]]}}
        data = json.dumps(body).encode()
        self.send_response(503 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _flaky_grpc(busy):
    """A PredictionService answering the first ``busy`` calls UNAVAILABLE: (server, port, calls)."""
    calls = []

    def predict(request, context):
        calls.append(request.model_spec.signature_name)
        if len(calls) <= busy:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        response = predict_pb2.PredictResponse()
        response.outputs["embedding"].CopyFrom(tf.make_tensor_proto(np.ones((1, 2), np.float32)))
        return response

    handler = grpc.unary_unary_rpc_method_handler(
        predict,
        request_deserializer=predict_pb2.PredictRequest.FromString,
        response_serializer=predict_pb2.PredictResponse.SerializeToString,
    )
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService", {"Predict": handler}
            ),
        )
    )
    port = server.add_insecure_port("localhost:0")
    server.start()
    return server, port, calls


@pytest.mark.parametrize("retries, busy, answered", [(2, 2, True), (0, 1, False), (1, 2, False)])
def test_a_busy_or_restarting_server_is_tried_again_with_backoff(retries, busy, answered):
    inputs = {"history": history_array([["i1"]])}
    _FlakyRest.busy, _FlakyRest.calls = busy, 0
    rest = http.server.ThreadingHTTPServer(("localhost", 0), _FlakyRest)
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    grpc_server, port, grpc_calls = _flaky_grpc(busy)
    clients = {
        "rest": RestClient(f"http://localhost:{rest.server_port}", "m", 10, retries),
        "grpc": GrpcClient(f"localhost:{port}", "m", 10, retries),
    }
    try:
        for transport, client in clients.items():
            if answered:
                embedding = client.predict(inputs, "query_embedding", output_aliases=("embedding",))
                assert np.asarray(embedding["embedding"]).shape == (1, 2), transport
            else:
                with pytest.raises(ServingError) as error:
                    client.predict(inputs, "query_embedding")
                assert error.value.code == "UNAVAILABLE", transport
        assert _FlakyRest.calls == len(grpc_calls) == min(busy, retries) + 1
    finally:
        for client in clients.values():
            client.close()
        rest.shutdown()
        grpc_server.stop(None)
