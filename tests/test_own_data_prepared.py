"""Training from prepared shards (--prepared_dir, issue 14 item 3).

The streamed batches are exactly those of the in-memory pipeline on the same
users, so a run from shards equals (same seed) the in-memory run. The shards
are written by the Beam pipeline from a generated log with malformed rows.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    free_ports,
    load_benchmark,
    losses_and_scores,
    start_python,
    start_worker,
    straight_and_resumed,
)

beam = pytest.importorskip("apache_beam")

from hybrid_tfrs.data.event_log import generate_events, write_csv  # noqa: E402
from hybrid_tfrs.data.prepared import load_prepared  # noqa: E402
from hybrid_tfrs.preprocess.pipeline import build_pipeline  # noqa: E402
from hybrid_tfrs.preprocess.rows import Columns  # noqa: E402


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    """Shards of 150 users (lengths ~3..25) and about 300 items, 3 shards, 2 malformed rows."""
    folder = tmp_path_factory.mktemp("own")
    users, items, times = generate_events(150, 300, 1800, seed=3)
    write_csv(folder / "events.csv", users, items, times)
    with open(folder / "events.csv", "a") as f:
        f.write("u1,,3\nu2,i1,later\n")
    with beam.Pipeline() as pipeline:
        build_pipeline(
            pipeline,
            [str(folder / "events.csv")],
            Columns("user_id", "item_id", "timestamp"),
            str(folder / "prepared"),
            num_shards=3,
        )
    return folder / "prepared"


@pytest.mark.parametrize(
    "causal, bucket_by_length, window_stride, bucket_widths",
    [
        (True, False, 0, None),
        (True, True, 0, None),
        (True, True, 3, None),
        (True, True, 0, [2, 3, 5]),
        (False, False, 0, None),
    ],
)
def test_streamed_batches_are_the_in_memory_batches(
    prepared_dir, causal, bucket_by_length, window_stride, bucket_widths
):
    from hybrid_tfrs.data.pipeline import last_position_dataset, training_dataset
    from hybrid_tfrs.data.prepared_pipeline import (
        read_split,
        streamed_split,
        streamed_training_dataset,
    )

    prepared = load_prepared(prepared_dir)
    assert len(prepared.shards) == 3
    split = read_split(prepared)
    streamed_users = streamed_split(prepared)
    lengths = streamed_users.train_lengths
    assert lengths.tolist() == [len(train) for train in split.train]
    assert streamed_users.stats() == split.stats()
    assert streamed_users.most_user_items == split.most_user_items
    streamed, _ = streamed_training_dataset(
        prepared,
        lengths,
        max_len=8,
        batch_size=16,
        seed=5,
        bucket_by_length=bucket_by_length,
        window_stride=window_stride,
        causal=causal,
        bucket_widths=bucket_widths,
    )
    if causal:
        in_memory = training_dataset(
            split.train,
            8,
            16,
            seed=5,
            bucket_by_length=bucket_by_length,
            window_stride=window_stride,
            bucket_widths=bucket_widths,
        )
    else:
        in_memory = last_position_dataset(split.train, 8, 16, seed=5)
    assert int(streamed.cardinality()) == int(in_memory.cardinality()) > 1
    # Autotuning's thread would make every epoch wait for its next wake-up
    # (pipeline.without_autotuning): both pipelines turn it off.
    assert streamed.options().autotune.enabled is False
    assert in_memory.options().autotune.enabled is False
    for _ in range(2):  # a new order each epoch, the same in both
        pairs = list(zip(streamed, in_memory, strict=True))
        for (inputs, targets), (inputs_ref, targets_ref) in pairs:
            np.testing.assert_array_equal(inputs, inputs_ref)
            np.testing.assert_array_equal(targets, targets_ref)


def _small_model(prepared):
    import keras

    from hybrid_tfrs.config import TrainConfig
    from hybrid_tfrs.training import build_model

    keras.utils.set_random_seed(2)
    config = TrainConfig(dataset="own", max_len=8, hidden_dim=16, num_layers=1)
    return build_model(config, prepared.num_items, prepared.item_popularity)


@pytest.mark.parametrize("part", ["valid", "test"])
def test_streamed_evaluation_equals_the_in_memory_evaluation(prepared_dir, part):
    """Every protocol, bucket and the gate: the sampled negatives are the same too."""
    from hybrid_tfrs.config import PROTOCOLS
    from hybrid_tfrs.data.prepared import PreparedSplit
    from hybrid_tfrs.data.prepared_pipeline import read_split, streamed_split
    from hybrid_tfrs.training import evaluate_split

    prepared = load_prepared(prepared_dir)
    model = _small_model(prepared)
    settings = dict(protocols=PROTOCOLS, seed=4, batch_size=16, progress=False)
    users = streamed_split(prepared)
    assert isinstance(users, PreparedSplit)
    streamed = evaluate_split(model, users, part, 8, **settings)
    in_memory = evaluate_split(model, read_split(prepared), part, 8, **settings)
    assert streamed["users"] == prepared.num_users > 16  # several batches, the last one short
    assert max(len(train) for train in read_split(prepared).train) > 8  # truncated histories
    assert streamed == in_memory


def test_prepared_evaluation_streams_users_batch_by_batch(prepared_dir, monkeypatch):
    """No array of all users: each batch of --eval_batch_size is read, then scored."""
    import tensorflow as tf

    from hybrid_tfrs import run_model, training
    from hybrid_tfrs.config import TrainConfig
    from hybrid_tfrs.data import prepared_pipeline
    from hybrid_tfrs.run_data import load_split

    def materialise(*args, **kwargs):
        raise AssertionError("every user's history was loaded into memory")

    monkeypatch.setattr(prepared_pipeline, "read_split", materialise)
    monkeypatch.setattr(run_model, "pad_latest", materialise)  # the in-memory split's padding
    events = []
    streamed_eval_dataset = prepared_pipeline.streamed_eval_dataset

    class LoggedBatches:
        def __init__(self, dataset):
            self.dataset = dataset

        def as_numpy_iterator(self):
            for batch in self.dataset.as_numpy_iterator():
                events.append(("read", len(batch["targets"])))
                yield batch

    def logged_dataset(*args, **kwargs):
        dataset = streamed_eval_dataset(*args, **kwargs)
        assert isinstance(dataset, tf.data.Dataset)
        assert dataset.options().autotune.enabled is False  # pipeline.without_autotuning
        return LoggedBatches(dataset)

    score_function = training.score_function

    def logged_score_function(model):
        score = score_function(model)

        def logged(histories):
            events.append(("score", len(histories)))
            return score(histories)

        return logged

    monkeypatch.setattr(prepared_pipeline, "streamed_eval_dataset", logged_dataset)
    monkeypatch.setattr(training, "score_function", logged_score_function)
    config = TrainConfig(
        dataset="own", prepared_dir=str(prepared_dir), max_len=8, eval_batch_size=32
    )
    prepared, users = load_split(config)
    result = training.evaluate_split(
        _small_model(prepared), users, "test", 8, batch_size=32, progress=False
    )
    sizes = [size for kind, size in events if kind == "read"]
    assert sizes == [32] * (len(sizes) - 1) + [prepared.num_users - 32 * (len(sizes) - 1)]
    assert len(sizes) > 2
    assert events == [(kind, size) for size in sizes for kind in ("read", "score")]
    assert result["users"] == prepared.num_users


def test_a_run_from_shards_equals_the_in_memory_run(repo_root, prepared_dir, tmp_path):
    args = dict(
        max_len=10,
        hidden_dim=16,
        num_layers=1,
        batch_size=32,
        epochs=2,
        seed=1,
        protocols="full,full-unseen,uniform-99,pop-100",
    )
    flags = [f"--{name}={value}" for name, value in args.items()]
    # The in-memory run gets a fresh process too: what earlier tests left in this
    # one (seed generators, traced functions) must not decide the comparison. It
    # trains while the streamed run trains and is evaluated.
    in_memory_run = f"""
from hybrid_tfrs.config import TrainConfig
from hybrid_tfrs.data.prepared import load_prepared
from hybrid_tfrs.data.prepared_pipeline import read_split
from hybrid_tfrs.training import train

prepared = load_prepared({str(prepared_dir)!r})
config = TrainConfig(
    dataset="own", data_file="(in memory)", output_dir={str(tmp_path / "memory")!r}, **{args!r}
)
train(config, log=lambda _: None, dataset=(prepared, read_split(prepared)))
"""
    memory = start_python(in_memory_run, {"PYTHONPATH": str(repo_root)}, tmp_path / "memory.log")
    try:
        _train_and_evaluate_from_shards(repo_root, prepared_dir, tmp_path, flags)
        code = memory.wait(timeout=300)
    finally:
        if memory.poll() is None:
            memory.kill()
    assert code == 0, (tmp_path / "memory.log").read_text()[-3000:]
    streamed = json.loads((tmp_path / "streamed" / "metrics.json").read_text())
    in_memory = json.loads((tmp_path / "memory" / "metrics.json").read_text())
    assert streamed["history"][-1]["loss"] == pytest.approx(in_memory["history"][-1]["loss"])
    for part in ("valid", "test"):
        for protocol in ("full", "full-unseen", "uniform-99", "pop-100"):
            expected = in_memory[part][protocol]
            assert streamed[part][protocol] == pytest.approx(expected, abs=1e-9), (part, protocol)


def _train_and_evaluate_from_shards(repo_root, prepared_dir, tmp_path, flags):
    """trainers/train.py --prepared_dir into ``tmp_path``/streamed, then
    trainers/evaluate.py on that run: it streams the shards too, with the run's numbers."""
    run = tmp_path / "streamed"
    result = subprocess.run(
        [
            sys.executable,
            str(repo_root / "trainers" / "train.py"),
            f"--prepared_dir={prepared_dir}",
            f"--output_dir={run}",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    streamed = json.loads((run / "metrics.json").read_text())
    assert streamed["dataset"] == "own"
    # hybrid-tfrs-evaluate streams the shards too, and gives the run's own numbers.
    result = subprocess.run(
        [sys.executable, str(repo_root / "trainers" / "evaluate.py"), f"--run_dir={run}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((run / "evaluation.json").read_text())
    assert {part: evaluated[part]["protocols"] for part in ("valid", "test")} == {
        part: streamed[part] for part in ("valid", "test")
    }
    assert streamed["config"]["prepared_dir"] == str(prepared_dir)
    assert (run / "vocabulary.txt").read_text() == (prepared_dir / "vocabulary.txt").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prepared_dir={tmp}/absent"], "absent: no such folder"),
        (["--prepared_dir={tmp}"], "stats.json: no such file"),
        (["--prepared_dir={tmp}", "--data_file=x.csv"], "--prepared_dir="),
        (["--prepared_dir={tmp}", "--dataset=beauty"], "cannot be combined with --prepared_dir"),
    ],
)
def test_bad_prepared_dir_fails_in_one_line_before_tensorflow(repo_root, tmp_path, args, message):
    code = (
        "import sys\n"
        "from hybrid_tfrs.cli import train\n"
        "try:\n"
        f"    train.run(['hybrid-tfrs-train', '--output_dir={tmp_path / 'run'}', "
        f"*{[arg.format(tmp=tmp_path) for arg in args]!r}])\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
        cwd=repo_root,
    )
    assert result.stdout.strip() == "exit 2 False", result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_two_workers_train_from_prepared_shards(prepared_dir, tmp_path):
    """A multi-worker strategy made before the shards are read (TensorFlow ops)."""
    ports = free_ports(2)
    flags = [
        f"--prepared_dir={prepared_dir}",
        "--max_len=10",
        "--hidden_dim=16",
        "--num_layers=1",  # what is checked is the start-up order, not the depth
        "--epochs=1",
        "--protocols=full",
        "--distribution_strategy=multi_worker_mirrored",
        f"--output_dir={tmp_path / 'run'}",
    ]
    workers = [start_worker(i, ports, flags, tmp_path / f"worker{i}.log") for i in range(2)]
    codes = [worker.wait(timeout=600) for worker in workers]
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    assert "Traceback" not in logs[0] + logs[1]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_trained"] == 1


def test_a_resumed_run_from_shards_trains_as_an_uninterrupted_one(prepared_dir, tmp_path):
    """The streamed pipeline's shuffles (of shards and of rows) resume where they were."""
    settings = dict(
        dataset="own",
        prepared_dir=str(prepared_dir),
        shuffle_buffer=40,  # fewer than the rows: the shard order is shuffled too
        max_len=10,
        hidden_dim=16,
        num_layers=1,
        batch_size=32,
        dropout=0.5,
        patience=10,
        protocols="full",
    )
    straight, resumed, _ = straight_and_resumed(tmp_path, settings)
    np.testing.assert_allclose(losses_and_scores(resumed), losses_and_scores(straight), rtol=1e-5)


def test_the_run_diagnoses_read_a_hybrid_trained_from_shards(prepared_dir, tmp_path):
    """benchmarks/gate_diagnosis.py and seen_items.py on a --prepared_dir run: the test
    users come from the shards, and the model's NDCG@10 is the one the (streamed)
    trainer reported."""
    from hybrid_tfrs.config import TrainConfig
    from hybrid_tfrs.training import train

    run = tmp_path / "run"
    config = TrainConfig(
        dataset="own",
        prepared_dir=str(prepared_dir),
        model="hybrid",
        max_len=10,
        hidden_dim=16,
        batch_size=32,
        epochs=1,
        seen_item_bias=True,
        protocols="full,full-unseen",
        output_dir=str(run),
    )
    train(config, log=lambda _: None)
    diagnosed = load_benchmark("gate_diagnosis").diagnose(str(run), None, 64, [0.0, 1.0])
    trained = json.loads((run / "metrics.json").read_text())["test"]
    assert diagnosed["users"] == load_prepared(prepared_dir).num_users
    seen = load_benchmark("seen_items").diagnose(str(run), None, 64)
    assert seen["users"] == diagnosed["users"]
    for protocol in ("full", "full-unseen"):
        assert diagnosed["ndcg10"]["model"][protocol] == pytest.approx(
            trained[protocol]["NDCG@10"], abs=1e-6
        )
        assert seen["ndcg@10"][protocol] == pytest.approx(trained[protocol]["NDCG@10"], abs=1e-6)
