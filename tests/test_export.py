"""SavedModel export: signatures, parity with the in-memory model, atomic versions, CLI."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from hybrid_tfrs import SequentialRetrievalModel, build_encoder
from hybrid_tfrs import export as export_lib
from hybrid_tfrs.data import Vocabulary, pad_latest
from hybrid_tfrs.export import export_run, export_saved_model, serialize_history_example

NUM_ITEMS, MAX_LEN, HIDDEN, TOP_K = 40, 6, 16, 10
VOCABULARY = Vocabulary([f"i{i}" for i in range(1, NUM_ITEMS + 1)])
HISTORIES = [
    ["i1", "i2", "i3"],
    [f"i{i}" for i in range(20, 31)],  # 11 items > max_len: the latest 6 count
    ["zz", "i4", "", "i7", "nope"],  # unknown ids and "" are dropped
    ["i9"],
]
COMPLETE_VERSION_FILES = (
    "saved_model.pb",
    "variables/variables.index",
    "assets/vocabulary.txt",
    "assets.extra/tf_serving_warmup_requests",
)


def make_model(seed=1):
    keras.utils.set_random_seed(seed)
    encoder = build_encoder("hybrid", num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=HIDDEN)
    return SequentialRetrievalModel(encoder)


def history_tensor(histories):
    width = max(len(h) for h in histories)
    return tf.constant([h + [""] * (width - len(h)) for h in histories])


def recommend(loaded, histories, k, exclude_history=False):
    """Calls the ``recommend`` signature on raw histories."""
    return loaded.signatures["recommend"](
        history=history_tensor(histories),
        k=tf.constant(k),
        exclude_history=tf.constant(exclude_history),
    )


def decoded(item_ids):
    return [[raw.decode() for raw in row] for row in item_ids.numpy()]


def encode(histories):
    """What the export does to raw histories, in numpy: [B, MAX_LEN] indices."""
    known = [[VOCABULARY.index(raw) for raw in h if raw in VOCABULARY] for h in histories]
    return pad_latest(known, MAX_LEN)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """Exports version 1 while a thread lists the model folder.

    Returns (version folder, [(entry name, complete?)] seen during the export).
    """
    base = tmp_path_factory.mktemp("export")
    model_dir = base / "hybrid"
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for name in os.listdir(model_dir) if model_dir.exists() else ():
                complete = all((model_dir / name / f).exists() for f in COMPLETE_VERSION_FILES)
                seen.append((name, complete))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        path = export_saved_model(model, VOCABULARY, str(base), "hybrid", version=1, top_k=TOP_K)
    finally:
        done.set()
        watcher.join()
    return Path(path), seen


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[0]))


def test_version_folder_appears_complete_and_atomically(exported):
    path, seen = exported
    assert path == path.parent / "1"
    numeric = [complete for name, complete in seen if name.isdigit()]
    hidden = {name for name, _ in seen if not name.isdigit()}
    assert all(numeric), "a numeric version folder was visible before it was complete"
    assert hidden and all(name.startswith(".") for name in hidden)  # written under a temp name
    assert os.listdir(path.parent) == ["1"]  # and the temp folder is gone


def test_saved_model_cli_lists_the_four_signatures(exported):
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported[0])],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    blocks = re.split(r"signature_def\['(\w+)'\]:", result.stdout)[1:]
    signatures = {
        name: dict(
            ((kind, alias), (dtype, shape))
            for kind, alias, dtype, shape in re.findall(
                r"(input|output)s\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", block
            )
        )
        for name, block in zip(blocks[::2], blocks[1::2])
        if not name.startswith("__")
    }
    string, floats = "DT_STRING", "DT_FLOAT"
    assert signatures == {
        "serving_default": {
            ("input", "examples"): (string, "(-1)"),
            ("output", "item_ids"): (string, f"(-1, {TOP_K})"),
            ("output", "scores"): (floats, f"(-1, {TOP_K})"),
            ("output", "known_items"): ("DT_INT32", "(-1)"),
        },
        "recommend": {
            ("input", "history"): (string, "(-1, -1)"),
            ("input", "k"): ("DT_INT32", "()"),
            ("input", "exclude_history"): ("DT_BOOL", "()"),
            ("output", "item_ids"): (string, "(-1, -1)"),
            ("output", "scores"): (floats, "(-1, -1)"),
            ("output", "known_items"): ("DT_INT32", "(-1)"),
        },
        "query_embedding": {
            ("input", "history"): (string, "(-1, -1)"),
            ("output", "embedding"): (floats, f"(-1, {HIDDEN})"),
        },
        "item_embeddings": {
            ("output", "item_ids"): (string, f"({NUM_ITEMS})"),
            ("output", "embeddings"): (floats, f"({NUM_ITEMS}, {HIDDEN})"),
            ("output", "seen_item_bias"): (floats, "()"),
        },
    }


def test_recommend_matches_the_in_memory_model(model, loaded):
    k = 7
    result = recommend(loaded, HISTORIES, k)
    top, scores = model.recommend(encode(HISTORIES), k=k)
    expected_ids = [VOCABULARY.decode(row) for row in np.asarray(top)]
    got_ids = [[raw.decode() for raw in row] for row in result["item_ids"].numpy()]
    assert got_ids == expected_ids
    np.testing.assert_allclose(result["scores"].numpy(), np.asarray(scores), rtol=1e-5, atol=1e-6)


def test_long_history_keeps_the_latest_items_and_unknown_ids_are_dropped(loaded):
    def answer(histories):
        out = recommend(loaded, histories, 5)
        return out["item_ids"].numpy().tolist(), out["scores"].numpy()

    long_history = HISTORIES[1]
    ids, scores = answer([long_history])
    ids_latest, scores_latest = answer([long_history[-MAX_LEN:]])
    assert ids == ids_latest
    np.testing.assert_allclose(scores, scores_latest, rtol=1e-6)
    ids, scores = answer([["zz", "i4", "", "i7", "nope"]])
    ids_known, scores_known = answer([["i4", "i7"]])
    assert ids == ids_known
    np.testing.assert_allclose(scores, scores_known, rtol=1e-6)
    # ... and the answer says how many ids of each row it read: 2 of the 4 given above
    known = recommend(loaded, [["zz", "i4", "", "i7", "nope"], long_history], 5)["known_items"]
    assert known.numpy().tolist() == [2, len(long_history)]


def test_serving_default_agrees_with_recommend(loaded):
    examples = tf.constant([serialize_history_example(h) for h in HISTORIES])
    by_example = loaded.signatures["serving_default"](examples=examples)
    by_history = recommend(loaded, HISTORIES, TOP_K)
    assert by_example["item_ids"].shape == (len(HISTORIES), TOP_K)
    np.testing.assert_array_equal(by_example["item_ids"].numpy(), by_history["item_ids"].numpy())
    np.testing.assert_allclose(by_example["scores"].numpy(), by_history["scores"].numpy(), 1e-6)


def test_embeddings_match_the_in_memory_model(model, loaded):
    query = loaded.signatures["query_embedding"](history=history_tensor(HISTORIES))["embedding"]
    expected = model.query_embedding(encode(HISTORIES))
    np.testing.assert_allclose(query.numpy(), np.asarray(expected), rtol=1e-5, atol=1e-6)
    items = loaded.signatures["item_embeddings"]()
    assert [raw.decode() for raw in items["item_ids"].numpy()] == list(VOCABULARY.ids)
    np.testing.assert_allclose(
        items["embeddings"].numpy(), np.asarray(model.encoder.item_embeddings)[1:], rtol=1e-6
    )


@pytest.mark.parametrize(
    "histories, k, message",
    [
        ([["i1"], ["zz", "nope"]], 3, "at least one item id of the vocabulary"),
        ([["", ""]], 3, "at least one item id of the vocabulary"),
        ([["i1"]], 0, f"k must be in 1..{NUM_ITEMS}"),
        ([["i1"]], NUM_ITEMS + 1, f"k must be in 1..{NUM_ITEMS}"),
    ],
)
def test_bad_requests_raise_invalid_argument(loaded, histories, k, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        recommend(loaded, histories, k)


def test_exclude_history_leaves_out_every_known_item_of_the_row(loaded):
    """Not only the latest max_len items: the whole row's known ids are excluded."""
    k = 8
    excluded = recommend(loaded, HISTORIES, k, exclude_history=True)
    everything = recommend(loaded, HISTORIES, NUM_ITEMS)
    for row, history in enumerate(HISTORIES):
        ranked = decoded(everything["item_ids"])[row]
        scores = everything["scores"].numpy()[row]
        expected = [(raw, s) for raw, s in zip(ranked, scores) if raw not in history][:k]
        assert decoded(excluded["item_ids"])[row] == [raw for raw, _ in expected]
        np.testing.assert_allclose(excluded["scores"].numpy()[row], [s for _, s in expected], 1e-6)
    assert set(HISTORIES[1]).isdisjoint(decoded(excluded["item_ids"])[1])  # 11 items > max_len


def test_exclude_history_with_k_beyond_the_unseen_items_pads_with_empty_ids(loaded):
    history = [f"i{i}" for i in range(1, NUM_ITEMS - 1)]  # all but 2 items seen
    result = recommend(loaded, [history], 5, exclude_history=True)
    ids, scores = decoded(result["item_ids"])[0], result["scores"].numpy()[0]
    assert sorted(ids[:2]) == [f"i{NUM_ITEMS - 1}", f"i{NUM_ITEMS}"]
    assert ids[2:] == ["", "", ""] and np.all(np.isneginf(scores[2:]))
    assert np.all(np.isfinite(scores[:2]))


def test_serving_default_follows_the_exports_exclude_history(model, loaded, tmp_path):
    path = export_saved_model(
        model, VOCABULARY, str(tmp_path), "hybrid", version=1, top_k=TOP_K, exclude_history=True
    )
    assert json.loads(Path(path, "assets.extra", "export.json").read_text())["exclude_history"]
    examples = tf.constant([serialize_history_example(h) for h in HISTORIES])
    by_example = tf.saved_model.load(path).signatures["serving_default"](examples=examples)
    by_history = recommend(loaded, HISTORIES, TOP_K, exclude_history=True)
    np.testing.assert_array_equal(by_example["item_ids"].numpy(), by_history["item_ids"].numpy())


def test_example_without_history_feature_is_rejected(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one item id"):
        loaded.signatures["serving_default"](examples=tf.constant([b""]))


def test_vocabulary_is_an_asset_and_warmup_requests_replay(exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported[0]
    assert (path / "assets" / "vocabulary.txt").read_text().split("\n")[:-1] == list(VOCABULARY.ids)
    assert loaded.vocabulary.asset_path.numpy().decode().endswith("assets/vocabulary.txt")
    records = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path / export_lib.WARMUP_FILE))
    ]
    signatures = {r.predict_log.request.model_spec.signature_name for r in records}
    assert signatures == {"serving_default", "recommend"}
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.name == "hybrid"
        inputs = {alias: tf.make_ndarray(p) for alias, p in request.inputs.items()}
        loaded.signatures[request.model_spec.signature_name](**inputs)


def test_export_refuses_mismatched_vocabulary_and_existing_version(model, exported):
    base = str(exported[0].parent.parent)
    with pytest.raises(ValueError, match="vocabulary has 3 items"):
        export_saved_model(model, Vocabulary(["a", "b", "c"]), base, "hybrid", version=2)
    with pytest.raises(FileExistsError, match="already exists"):
        export_saved_model(model, VOCABULARY, base, "hybrid", version=1)
    with pytest.raises(ValueError, match="top_k"):
        export_saved_model(model, VOCABULARY, base, "hybrid", version=2, top_k=0)


def _fake_save(module, path, signatures):
    """Stands in for tf.saved_model.save in tests of the folder logic (fast)."""
    os.makedirs(os.path.join(path, "variables"))
    Path(path, "saved_model.pb").write_bytes(b"partial")


def test_failed_export_leaves_no_version_and_no_temp_folder(model, tmp_path, monkeypatch):
    def failing_save(module, path, signatures):
        _fake_save(module, path, signatures)
        raise OSError("disk full")

    monkeypatch.setattr(export_lib.tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid", version=5)
    assert os.listdir(tmp_path / "hybrid") == []


def _fake_save_published_unchecked(monkeypatch):
    """Exports write _fake_save's stub, and publish it without the load check it fails."""
    monkeypatch.setattr(export_lib.tf.saved_model, "save", _fake_save)
    monkeypatch.setattr(export_lib, "_check_it_serves", lambda *args: None)


def test_an_export_that_does_not_load_is_not_published(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export_lib.tf.saved_model, "save", _fake_save)  # a partial saved_model.pb
    with pytest.raises(
        ValueError, match=r"hybrid/5: not published, .*\(DATA_LOSS: .*cannot be parsed"
    ):
        export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid", version=5)
    assert os.listdir(tmp_path / "hybrid") == []


def test_export_removes_folders_of_killed_exports_only(model, tmp_path, monkeypatch):
    _fake_save_published_unchecked(monkeypatch)
    model_dir = tmp_path / "hybrid"
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    names = {
        "killed": f".tmp-export-7-{host}-{dead}-abc",
        "running": f".tmp-export-8-{host}-{os.getpid()}-def",
        "other_host_old": ".tmp-export-9-elsewhere-123-ghi",
        "other_host_recent": ".tmp-export-10-elsewhere-456-jkl",
    }
    for name in names.values():
        (model_dir / name).mkdir(parents=True)
    old = time.time() - export_lib.STALE_TEMP_SECONDS - 60
    os.utime(model_dir / names["other_host_old"], (old, old))
    export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid", version=11)
    assert sorted(os.listdir(model_dir)) == sorted(
        ["11", names["running"], names["other_host_recent"]]
    )


def test_default_version_is_a_timestamp_after_existing_ones(model, tmp_path, monkeypatch):
    _fake_save_published_unchecked(monkeypatch)
    before = int(time.time())
    path = export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid", top_k=1000)
    assert before <= int(Path(path).name) <= time.time()
    export_info = json.loads(Path(path, "assets.extra", "export.json").read_text())
    assert export_info["top_k"] == NUM_ITEMS  # clipped to the catalogue
    (tmp_path / "hybrid" / "9999999999").mkdir()
    path = export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid")
    assert Path(path).name == "10000000000"


def test_export_run_needs_a_training_folder(tmp_path):
    with pytest.raises(ValueError, match="config.json not found"):
        export_run(str(tmp_path), str(tmp_path / "out"))


def test_export_run_names_a_broken_config_or_model_file(tmp_path):
    VOCABULARY.save(tmp_path / "vocabulary.txt")
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config.json: no model kind"):
        export_run(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "config.json").write_text('{"model": "hybrid"}')
    with pytest.raises(ValueError, match=r"model.keras: cannot be loaded"):
        export_run(str(tmp_path), str(tmp_path / "out"))


def test_a_vocabulary_asset_cut_short_fails_the_load(exported, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(exported[0], copy)
    vocabulary = copy / "assets" / "vocabulary.txt"
    vocabulary.write_text("\n".join(list(VOCABULARY.ids)[:-3]) + "\n")
    with pytest.raises(Exception, match="vocab_size"):
        recommend(tf.saved_model.load(str(copy)), [["i1"]], 2)


def test_export_cli(model, tmp_path, repo_root):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    VOCABULARY.save(run_dir / "vocabulary.txt")
    (run_dir / "config.json").write_text(json.dumps({"model": "hybrid"}))
    command = [sys.executable, "trainers/export.py", f"--export_dir={tmp_path / 'out'}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def export(*args):
        return subprocess.run(
            command + list(args),
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    result = export(f"--run_dir={run_dir}", "--version=3", "--top_k=5")
    assert result.returncode == 0, result.stderr[-2000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "out" / "hybrid" / "3"
    assert (path / "saved_model.pb").exists()
    older = export(f"--run_dir={run_dir}", "--version=2", "--top_k=5")
    assert older.returncode == 0, older.stderr[-2000:]
    assert "warning: version 3 is newer" in older.stderr
    result = export(f"--run_dir={tmp_path / 'missing'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --run_dir=")


class IntegerScoreModel:
    """Stand-in for the model with small-integer query vectors and item table:
    every score is exact whatever the chunking, and many tie."""

    max_len, num_items = MAX_LEN, NUM_ITEMS
    seen_bias = None  # no learned seen-item offset

    def __init__(self, seed=3, dim=3):
        table = np.random.default_rng(seed).integers(-2, 3, size=(NUM_ITEMS + 1, dim))
        self.encoder = type("Encoder", (), {})()
        self.encoder.item_embeddings = tf.Variable(table.astype("float32"))
        self.variables = [self.encoder.item_embeddings]
        self.mix = tf.constant(np.arange(1, 2 * dim, 2), tf.int32)

    def query_embedding(self, item_ids):
        total = tf.reduce_sum(item_ids, axis=1, keepdims=True)
        return tf.cast(tf.math.floormod(total * self.mix, 5) - 2, tf.float32)

    def brute_force(self, histories, k, exclude_history):
        """Raw ids and scores of tf.math.top_k over the whole [B, N] score matrix."""
        ids = encode(histories)
        scores = self.query_embedding(tf.constant(ids)).numpy() @ self.variables[0].numpy().T
        if exclude_history:
            for row, history in enumerate(histories):
                scores[
                    row, [VOCABULARY.index(raw) for raw in history if raw in VOCABULARY]
                ] = -np.inf
        top_scores, top = tf.math.top_k(scores[:, 1:], k)
        raw = [VOCABULARY.decode(row + 1) for row in top.numpy()]
        raw = np.where(np.isinf(top_scores.numpy()), "", raw)
        return raw.tolist(), top_scores.numpy()


@pytest.mark.parametrize("chunk_size", [1, 3, 7, NUM_ITEMS, 64])
def test_chunked_top_items_equal_brute_force_with_ties(chunk_size, tmp_path):
    stub = IntegerScoreModel()
    vocabulary_path = str(tmp_path / "vocabulary.txt")
    VOCABULARY.save(vocabulary_path)
    module = export_lib.RecommenderModule(stub, vocabulary_path, TOP_K, chunk_size=chunk_size)
    histories = HISTORIES + [[f"i{i}" for i in range(1, NUM_ITEMS - 2)]]  # 3 unseen items
    for k in (1, 5, NUM_ITEMS):
        for exclude_history in (False, True):
            got = module.recommend(history_tensor(histories), tf.constant(k), exclude_history)
            expected_ids, expected_scores = stub.brute_force(histories, k, exclude_history)
            assert decoded(got["item_ids"]) == expected_ids, (k, exclude_history)
            np.testing.assert_array_equal(got["scores"].numpy(), expected_scores)
    scores = stub.brute_force(histories, NUM_ITEMS, False)[1]
    assert any(len(set(row)) < NUM_ITEMS for row in scores)  # ties present


def test_chunk_size_must_be_positive(model, tmp_path):
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid", version=1, chunk_size=0)


ALL_FEATURES = "basic,trend,recency,diversity,spectrum"


@pytest.mark.parametrize(
    "variant",
    [
        dict(gate_mode="statistics_hidden", gate_output="vector", fusion="blend_norm"),
        dict(gate_mode="statistics", gate_output="vector", fusion="layer"),
        dict(gate_mode="statistics", dtype="mixed_float16"),  # float16 layers, float32 scores
    ],
    ids=["statistics-hidden-vector-blend-norm", "vector-layer-fusion", "mixed-float16"],
)
def test_a_gate_variant_exports_and_matches_the_in_memory_model(variant, tmp_path):
    keras.utils.set_random_seed(3)
    encoder = build_encoder(
        "hybrid",
        num_items=NUM_ITEMS,
        max_len=MAX_LEN,
        hidden_dim=HIDDEN,
        gate_features=ALL_FEATURES,
        **variant,
    )
    model = SequentialRetrievalModel(encoder)
    model.set_item_popularity(np.arange(NUM_ITEMS + 1))
    path = export_saved_model(model, VOCABULARY, str(tmp_path), "hybrid", version=1, top_k=TOP_K)
    result = recommend(tf.saved_model.load(path), HISTORIES, 5)
    top, scores = model.recommend(encode(HISTORIES), k=5)
    assert decoded(result["item_ids"]) == [VOCABULARY.decode(row) for row in np.asarray(top)]
    np.testing.assert_allclose(result["scores"].numpy(), np.asarray(scores), rtol=1e-5, atol=1e-5)
