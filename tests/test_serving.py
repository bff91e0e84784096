"""Serving: the local server in a subprocess, answered over gRPC and REST by one client API."""

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import requests

from hybrid_tfrs import SequentialRetrievalModel, build_encoder
from hybrid_tfrs.data import Vocabulary, pad_latest
from hybrid_tfrs.export import export_saved_model
from hybrid_tfrs.serving import ServingError
from hybrid_tfrs.serving import client as client_lib
from hybrid_tfrs.serving.batching import Batcher
from hybrid_tfrs.serving.client import GrpcClient, RestClient, history_array
from hybrid_tfrs.serving.versions import read_model_config_file

NUM_ITEMS, MAX_LEN, HIDDEN, TOP_K = 40, 6, 16, 10
VOCABULARY = Vocabulary([f"i{i}" for i in range(1, NUM_ITEMS + 1)])
HISTORIES = [
    ["i1", "i2", "i3"],
    [f"i{i}" for i in range(20, 31)],  # longer than max_len
    ["zz", "i4", "", "i7", "nope"],  # unknown ids and "" are dropped
]
TRANSPORTS = ("grpc", "rest")


def make_model(seed, **encoder_options):
    keras.utils.set_random_seed(seed)
    encoder = build_encoder(
        "hybrid", num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=HIDDEN, **encoder_options
    )
    model = SequentialRetrievalModel(encoder)
    model.set_item_popularity(np.arange(NUM_ITEMS + 1))
    return model


def expected_top(model, histories, k):
    """The in-memory model's answer: (raw ids [B][k], scores [B, k])."""
    known = [[VOCABULARY.index(raw) for raw in h if raw in VOCABULARY] for h in histories]
    top, scores = model.recommend(pad_latest(known, MAX_LEN), k=k)
    return [VOCABULARY.decode(row) for row in np.asarray(top)], np.asarray(scores)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """The server subprocess and what the tests need to talk to it."""

    def __init__(self, process, grpc_port, rest_port, base_path, model_v1, log_path):
        self.process = process
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.rest_url = f"http://127.0.0.1:{rest_port}"
        self.base_path = base_path
        self.model_v1 = model_v1
        self.log_path = log_path

    def client(self, transport, model="hybrid"):
        if transport == "grpc":
            return GrpcClient(self.grpc_target, model, timeout=60)
        return RestClient(self.rest_url, model, timeout=60)


def _wait_for_line(process, timeout_s):
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        return ""


@contextlib.contextmanager
def running_server(base_path, log_path, *flags, module="serving.server"):
    """The server subprocess on free loopback ports: yields (process, grpc port, rest port).

    Waits for its ready line, and on exit stops it and asserts a clean exit (0).
    """
    grpc_port, rest_port = free_port(), free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                "--model_name=hybrid",
                f"--model_base_path={base_path}",
                "--bind_address=127.0.0.1",
                *flags,
            ],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
    try:
        ready = _wait_for_line(process, timeout_s=180)
        assert ready.strip().startswith("serving hybrid version ") and ready.strip().endswith(
            f"on grpc port {grpc_port}, rest port {rest_port}"
        ), f"server not ready: {ready!r}\n{Path(log_path).read_text()[-3000:]}"
        yield process, grpc_port, rest_port
    finally:
        process.terminate()
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = "killed after SIGTERM timeout"
    assert returncode == 0, f"server did not stop cleanly: {returncode}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    base_path = root / "models" / "hybrid"
    model_v1 = make_model(seed=1)
    export_saved_model(model_v1, VOCABULARY, str(root / "models"), "hybrid", version=1, top_k=TOP_K)
    leftover = base_path / ".tmp-export-2-crashed"  # an export that died half-way
    leftover.mkdir()
    (leftover / "saved_model.pb").write_bytes(b"truncated")
    log_path = root / "server.log"
    flags = (
        "--file_system_poll_wait_seconds=0.2",
        "--enable_batching",
        "--batch_timeout_micros=2000",
    )
    with running_server(base_path, log_path, *flags) as (process, grpc_port, rest_port):
        yield Served(process, grpc_port, rest_port, base_path, model_v1, log_path)


@pytest.fixture(scope="module")
def clients(served):
    made = {transport: served.client(transport) for transport in TRANSPORTS}
    yield made
    for client in made.values():
        client.close()


def test_grpc_and_rest_answer_identically_and_as_the_model(served, clients):
    expected_ids, expected_scores = expected_top(served.model_v1, HISTORIES, 5)
    answers = {t: clients[t].recommend(HISTORIES, k=5) for t in TRANSPORTS}
    assert answers["grpc"].version == 1 and answers["rest"].version is None
    for answer in answers.values():
        assert answer.item_ids == expected_ids
        np.testing.assert_allclose(answer.scores, expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answers["grpc"].scores, answers["rest"].scores, rtol=1e-6)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_serving_default_agrees_with_recommend(clients, transport):
    by_example = clients[transport].recommend(HISTORIES, k=TOP_K, signature="serving_default")
    by_history = clients[transport].recommend(HISTORIES, k=TOP_K)
    assert by_example.item_ids == by_history.item_ids
    np.testing.assert_allclose(by_example.scores, by_history.scores, rtol=1e-6)


def test_embeddings_over_both_transports(served, clients):
    known = [[VOCABULARY.index(raw) for raw in h if raw in VOCABULARY] for h in HISTORIES]
    expected_query = np.asarray(served.model_v1.query_embedding(pad_latest(known, MAX_LEN)))
    expected_table = np.asarray(served.model_v1.encoder.item_embeddings)[1:]
    for transport in TRANSPORTS:
        query = clients[transport].query_embedding(HISTORIES)
        np.testing.assert_allclose(query, expected_query, rtol=1e-5, atol=1e-6)
        ids, table = clients[transport].item_embeddings()
        assert ids == list(VOCABULARY.ids)
        np.testing.assert_allclose(table, expected_table, rtol=1e-6)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metadata_and_status(served, clients, transport):
    metadata = clients[transport].metadata()
    assert metadata["version"] == 1
    signatures = metadata["signatures"]
    assert set(signatures) == {"serving_default", "recommend", "query_embedding", "item_embeddings"}
    recommend = signatures["recommend"]
    assert recommend["inputs"] == {
        "history": {"dtype": "DT_STRING", "shape": [-1, -1]},
        "k": {"dtype": "DT_INT32", "shape": []},
        "exclude_history": {"dtype": "DT_BOOL", "shape": []},
    }
    assert recommend["outputs"] == {
        "item_ids": {"dtype": "DT_STRING", "shape": [-1, -1]},
        "scores": {"dtype": "DT_FLOAT", "shape": [-1, -1]},
        "known_items": {"dtype": "DT_INT32", "shape": [-1]},
    }
    assert signatures["serving_default"]["inputs"] == {
        "examples": {"dtype": "DT_STRING", "shape": [-1]}
    }
    assert signatures["query_embedding"]["outputs"]["embedding"]["dtype"] == "DT_FLOAT"
    assert signatures["item_embeddings"]["inputs"] == {}
    status = clients[transport].status()
    # The leftover temp folder (.tmp-export-2-crashed) was ignored, not loaded.
    assert status == [{"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]
    assert clients[transport].status(version=1) == status


def recommend_inputs(client, **inputs):
    """``inputs`` of the recommend signature, with exclude_history=False if the export takes it."""
    if "exclude_history" in client.metadata()["signatures"]["recommend"]["inputs"]:
        inputs.setdefault("exclude_history", np.bool_(False))
    return inputs


BAD_REQUESTS = {
    "unknown model": ("NOT_FOUND", lambda c: c.recommend(HISTORIES, 3), "nope", None),
    "unknown version": ("NOT_FOUND", lambda c: c.recommend(HISTORIES, 3, version=7), None, None),
    "unknown signature": (
        "INVALID_ARGUMENT",
        lambda c: c.predict({"history": history_array(HISTORIES)}, "nope"),
        None,
        "not found",
    ),
    "int history": (
        "INVALID_ARGUMENT",
        lambda c: c.predict(
            recommend_inputs(c, history=np.array([[12, 55]], np.int32), k=np.int32(3)),
            "recommend",
        ),
        None,
        "DT_STRING",
    ),
    "history of rank 1": (
        "INVALID_ARGUMENT",
        lambda c: c.predict(
            recommend_inputs(c, history=history_array([["i1", "i2"]])[0], k=np.int32(3)),
            "recommend",
        ),
        None,
        "shape",
    ),
    "missing k": (
        "INVALID_ARGUMENT",
        lambda c: c.predict(recommend_inputs(c, history=history_array(HISTORIES)), "recommend"),
        None,
        "missing: ['k']",
    ),
    "all ids unknown": (
        "INVALID_ARGUMENT",
        lambda c: c.recommend([["i1"], ["zz", "nope"]], 3),
        None,
        "at least one item id",
    ),
    "all padding": (
        "INVALID_ARGUMENT",
        lambda c: c.recommend([["", ""]], 3),
        None,
        "at least one item id",
    ),
    "k above the catalogue": (
        "INVALID_ARGUMENT",
        lambda c: c.recommend(HISTORIES, NUM_ITEMS + 1),
        None,
        f"k must be in 1..{NUM_ITEMS}",
    ),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_tf_serving_status_codes(served, clients, transport, case):
    code, call, model, message = BAD_REQUESTS[case]
    with served.client(transport, model or "hybrid") as client:
        with pytest.raises(ServingError) as caught:
            call(client)
    assert caught.value.code == code, caught.value
    if message:
        assert message in caught.value.message
    if transport == "rest":
        assert caught.value.http_status == {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400}[code]
    assert clients[transport].recommend(HISTORIES[:1], k=2).item_ids  # still serving


def test_rest_rejects_malformed_bodies_with_a_json_error(served, clients):
    url = f"{served.rest_url}/v1/models/hybrid:predict"
    for body in (b"not json", b'{"inputs": {}, "instances": []}'):
        response = requests.post(url, data=body, timeout=30)
        assert response.status_code == 400
        assert set(response.json()) == {"error"}
    assert requests.get(f"{served.rest_url}/v2/nothing", timeout=30).status_code == 404
    assert clients["rest"].recommend(HISTORIES[:1], k=2).item_ids


def test_concurrent_requests_are_batched_and_answered_correctly(served):
    requests_ = [([f"i{1 + i}", f"i{30 - i}", "i5"][: 1 + i % 3], 3 + i % 2) for i in range(24)]
    errors, answers = [], {}

    def send(index, history, k):
        try:
            with served.client("grpc") as client:
                answers[index] = client.recommend([history], k=k).item_ids[0]
        except Exception as error:  # noqa: BLE001 (collected for the assertion)
            errors.append(error)

    threads = [threading.Thread(target=send, args=(i, h, k)) for i, (h, k) in enumerate(requests_)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, (history, k) in enumerate(requests_):
        assert answers[index] == expected_top(served.model_v1, [history], k)[0][0]


def test_client_cli_prints_a_table_or_a_one_line_error(served, capsys):
    argv = ["--target", served.grpc_target, "--model", "hybrid", "--history", "i1", "i2"]
    assert client_lib.main(argv + ["--k", "3"]) == 0
    out = capsys.readouterr().out
    expected_ids, _ = expected_top(served.model_v1, [["i1", "i2"]], 3)
    assert "model hybrid version 1 via grpc" in out
    assert [line.split()[1] for line in out.splitlines()[-3:]] == expected_ids[0]
    assert client_lib.main(argv + ["--rest", served.rest_url, "--k", "500"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: INVALID_ARGUMENT: k must be in 1..40")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_k_is_checked_and_an_empty_batch_needs_no_call(clients, transport):
    client = clients[transport]
    for k in (0, -2, 2**31, 2.5, True):  # serving_default slices k itself
        with pytest.raises(ValueError, match=r"k=.*: must be a whole number from 1 to 2147483647"):
            client.recommend([["i1"]], k=k, signature="serving_default")
    for signature in ("recommend", "serving_default"):
        empty = client.recommend([], k=3, signature=signature)
        assert empty.item_ids == [] and empty.scores.shape == (0, 3)
    nowhere = RestClient("http://127.0.0.1:9", "hybrid", retries=0)  # no server there
    assert nowhere.recommend([], k=3).item_ids == []  # so no call was made
    for histories, options in [
        ([], {"signature": "bogus"}),
        ([], {"signature": "serving_default", "exclude_history": True}),
        ("", {}),
    ]:  # an empty batch's arguments are checked all the same
        with pytest.raises(ValueError):
            client.recommend(histories, k=3, **options)


def test_the_client_command_refuses_k_below_1_and_prints_no_tensorflow_lines(repo_root):
    with pytest.raises(SystemExit) as stop:
        client_lib.main(["--model", "hybrid", "--history", "i1", "--k", "0"])
    assert stop.value.code == 2
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{sock.getsockname()[1]}"
    command = [sys.executable, "-m", "hybrid_tfrs.serving.client", "--target", target]
    command += ["--model", "hybrid", "--history", "i1", "--retries", "0", "--timeout", "5"]
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: UNAVAILABLE"), lines


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ids_the_model_does_not_know_are_counted_and_shown(served, clients, transport, capsys):
    result = clients[transport].recommend([["i1", "I2", "i3"], ["i5"]], k=3)
    assert result.known_items == [2, 1]
    assert clients[transport].recommend([["i1"]], k=3, signature="serving_default").known_items == [
        1
    ]
    argv = ["--target", served.grpc_target, "--model", "hybrid", "--history", "i1", "x9", "i2"]
    assert client_lib.main(argv + ["--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "note: 1 of these 3 ids are not in the model's vocabulary and were ignored" in out
    with pytest.raises(ValueError, match=r"history 0, position 1: .* got float 2.0"):
        clients[transport].recommend([["i1", 2.0]], k=3)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exclude_history_is_sent_only_when_the_signature_takes_it(served, clients, transport):
    client = clients[transport]
    inputs = client.metadata()["signatures"]["recommend"]["inputs"]
    if "exclude_history" in inputs:  # an export with the input
        result = client.recommend(HISTORIES[:1], k=5, exclude_history=True)
        assert not set(result.item_ids[0]) & set(HISTORIES[0])
    else:
        with pytest.raises(ValueError, match="has no exclude_history input"):
            client.recommend(HISTORIES[:1], k=5, exclude_history=True)
    assert client.recommend(HISTORIES[:1], k=5).item_ids  # default False: works on both


class FakeTransport(client_lib._Client):
    """A client whose server's recommend signature gains exclude_history after a while."""

    def __init__(self):
        super().__init__("hybrid", timeout=1)
        self.takes_exclude_history = False
        self.sent = []

    def _metadata(self, version):
        inputs = {"history": {"dtype": "DT_STRING"}, "k": {"dtype": "DT_INT32"}}
        if self.takes_exclude_history:
            inputs["exclude_history"] = {"dtype": "DT_BOOL"}
        return 1, {"signature_def": {"recommend": {"inputs": inputs}}}

    def _predict(self, inputs, signature, version, output_aliases):
        self.sent.append(sorted(inputs))
        if ("exclude_history" in inputs) != self.takes_exclude_history:
            raise ServingError("INVALID_ARGUMENT", "missing: ['exclude_history'], unexpected: []")
        rows = len(inputs["history"])
        return {"item_ids": np.full((rows, 1), b"i9", object), "scores": np.ones((rows, 1))}, 1


def test_client_learns_the_recommend_inputs_and_follows_a_change():
    client = FakeTransport()
    assert client.recommend([["i1"]], k=1).item_ids == [["i9"]]
    assert client.sent == [["history", "k"]]
    client.takes_exclude_history = True  # a new version was swapped in
    client.recommend([["i1"]], k=1)
    assert client.sent[1:] == [["history", "k"], ["exclude_history", "history", "k"]]
    client.recommend([["i1"]], k=1, exclude_history=True)
    assert client.sent[-1] == ["exclude_history", "history", "k"]


def test_client_cli_exclude_history_and_the_serving_wrapper(served, repo_root, capsys):
    argv = ["--rest", served.rest_url, "--model", "hybrid", "--history", "i1", "--k", "2"]
    inputs = client_lib.RestClient(served.rest_url, "hybrid").metadata()["signatures"]
    if "exclude_history" not in inputs["recommend"]["inputs"]:
        assert client_lib.main(argv + ["--exclude_history"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "has no exclude_history input" in err
    wrapped = subprocess.run(
        [sys.executable, "-m", "serving.client", *argv],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrapped.returncode == 0, wrapped.stderr[-2000:]
    assert f"model hybrid version newest via rest {served.rest_url}" in wrapped.stdout


def test_client_flags_and_rest_import_neither_tensorflow_nor_grpc(repo_root):
    """With the package's own __init__ skipped (it imports keras), the client stays light."""
    code = f"""
import sys, types
package = types.ModuleType("hybrid_tfrs")
package.__path__ = [{str(repo_root / "hybrid_tfrs")!r}]
sys.modules["hybrid_tfrs"] = package
from hybrid_tfrs.serving import client
try:
    client.main(["--model"])
except SystemExit as stop:
    assert stop.code == 2, stop.code
assert client.main(["--rest", "http://127.0.0.1:9", "--model", "m", "--history", "i1"]) == 1
heavy = sorted(name for name in ("tensorflow", "grpc", "keras") if name in sys.modules)
assert not heavy, heavy
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error: UNAVAILABLE: http://127.0.0.1:9" in result.stderr


def test_new_version_is_picked_up_while_clients_query(served):
    """Exports version 2 while three clients loop; no request fails, answers switch to v2."""
    history, k = [HISTORIES[0]], 5
    # Another model, one layer deep: a new version need not be built like the last one,
    # and a shallower one is exported and loaded in less time.
    model_v2 = make_model(seed=2, num_layers=1)
    answer_v1 = expected_top(served.model_v1, history, k)[0][0]
    answer_v2 = expected_top(model_v2, history, k)[0][0]
    assert answer_v1 != answer_v2
    transports = ("grpc", "grpc", "rest")
    stop, errors, seen = threading.Event(), [], [[] for _ in transports]

    def loop(transport, answers):
        with served.client(transport) as client:
            while not stop.is_set():
                try:
                    result = client.recommend(history, k=k)
                except Exception as error:  # noqa: BLE001 (collected for the assertion)
                    errors.append(error)
                    continue
                answer = result.item_ids[0]
                weights = 1 if answer == answer_v1 else 2 if answer == answer_v2 else 0
                answers.append((result.version, weights))

    threads = [threading.Thread(target=loop, args=args) for args in zip(transports, seen)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        export_saved_model(model_v2, VOCABULARY, str(served.base_path.parent), "hybrid", version=2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
            any(weights == 2 for _, weights in answers) for answers in seen
        ):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    for transport, answers in zip(transports, seen):
        stream = [weights for _, weights in answers]
        assert stream[0] == 1 and 0 not in stream
        switched = stream.index(2)
        assert set(stream[switched:]) == {2}  # once on v2, never back (v1 is unloaded)
        if transport == "grpc":  # the version the server names is the one that answered
            assert all(version == weights for version, weights in answers)
    with served.client("grpc") as client:
        assert [row["version"] for row in client.status()] == [2]


def test_batcher_merges_requests_and_isolates_a_failing_one():
    class FakeSignature:
        """Row-wise: returns each row's first item; fails on b"bad"."""

        batch_inputs = ("history",)

        def __init__(self):
            self.calls = []

        def run(self, inputs):
            history = inputs["history"]
            self.calls.append(history.shape[0])
            if (history == b"bad").any():
                raise ServingError("INVALID_ARGUMENT", "bad row")
            return {"first": history[:, 0], "k": inputs["k"]}

    def send_all(batcher, signature, rows):
        results, barrier = {}, threading.Barrier(len(rows))

        def send(i):
            barrier.wait()
            inputs = {"history": np.array([rows[i]], dtype=object), "k": np.int32(2)}
            try:
                results[i] = batcher.run(signature, inputs)
            except ServingError as error:
                results[i] = error

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(rows))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    batcher = Batcher(max_batch_size=8, timeout_s=0.2)
    rows = [[f"i{i}".encode()] * (1 + i % 3) for i in range(6)]  # different widths
    for bad_row in (None, 3):
        signature = FakeSignature()
        if bad_row is not None:
            rows[bad_row] = [b"bad"]
        results = send_all(batcher, signature, rows)
        assert max(signature.calls) > 1  # requests shared a call
        for i, row in enumerate(rows):
            if i == bad_row:
                assert isinstance(results[i], ServingError)
            else:
                assert results[i]["first"].tolist() == [row[0]]
                assert int(results[i]["k"]) == 2
    batcher.stop()


def test_model_config_file_example_parses(repo_root, tmp_path):
    configs = read_model_config_file(str(repo_root / "serving" / "models.config"))
    assert [(c.name, c.base_path, c.policy) for c in configs] == [
        ("hybrid", "/models/hybrid", ("latest", 2)),
        ("sasrec", "/models/sasrec", ("latest", 1)),
    ]
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match="bad.config"):
        read_model_config_file(str(bad))


def test_the_readmes_rest_requests_are_answered_as_written(served, repo_root):
    text = (repo_root / "serving" / "README.md").read_text()
    bodies = re.findall(r"-X POST localhost:8501/v1/models/hybrid:predict \\\n\s+-d '(.+)'", text)
    assert len(bodies) >= 2
    for body in bodies:
        response = requests.post(
            f"{served.rest_url}/v1/models/hybrid:predict", data=body, timeout=30
        )
        assert response.status_code == 200, (body, response.text)
