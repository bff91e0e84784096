"""tf.distribute: a replicated step updates the weights as one device does."""

import json
import re
import time
from types import SimpleNamespace

import pytest
from conftest import free_ports, run_python, start_worker

from hybrid_tfrs.config import TrainConfig, cluster_from_tf_config
from hybrid_tfrs.run_dir import WORKER_DONE

# One SGD step on the same global batch, on one device and mirrored over two
# logical CPUs; prints the largest weight difference. SGD (not Adam) so that a
# loss counted twice (summed replica gradients) shows as a doubled update.
ONE_STEP = """
import json, os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from hybrid_tfrs import SequentialRetrievalModel, build_encoder

def data(unequal):
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, 30, size=(4, 6)).astype("int32")
    targets = rng.integers(1, 30, size=(4, 6)).astype("int32")
    if unequal:  # the replicas' halves hold 12 and 5 targets
        inputs[2:, 1:] = 0
        targets[2:, 1:] = 0
        targets[3, 0] = 0
    return tf.data.Dataset.from_tensors((inputs, targets))

def trained(strategy, normalization, batches):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        encoder = build_encoder("sasrec", num_items=30, max_len=6, hidden_dim=8, num_heads=1,
                                dropout_rate=0.0)
        per_batch = 8.5 if normalization == "target" else None
        model = SequentialRetrievalModel(encoder, loss_normalization=normalization,
                                         targets_per_batch=per_batch)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(batches, epochs=1, verbose=0)
    return [np.asarray(w) for w in model.weights]

diffs = {}
for case in os.environ["CASES"].split(","):
    normalization, batch = case.split("-")
    one = trained(tf.distribute.get_strategy(), normalization, data(batch == "unequal"))
    two = trained(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        normalization,
        data(batch == "unequal"),
    )
    diffs[case] = {"diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
                   "moved": max(float(np.abs(a).max()) for a in one)}
print(json.dumps(diffs))
"""
STEP_CASES = [("batch", "equal"), ("target", "equal"), ("target", "unequal")]
# Not one step: each replica averages its own targets (see check_settings).
BATCH_UNEQUAL = ("batch", "unequal")


@pytest.fixture(scope="module")
def step_differences():
    """{"<normalization>-<batch>": {"diff": largest weight difference, "moved": largest
    weight}} of every case, all from one interpreter: each case builds its own models,
    and a TensorFlow start costs more than the step."""
    cases = ",".join(
        f"{normalization}-{batch}" for normalization, batch in [*STEP_CASES, BATCH_UNEQUAL]
    )
    result = run_python(ONE_STEP, {"CASES": cases}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("normalization, batch", STEP_CASES)
def test_mirrored_step_equals_the_single_device_step(step_differences, normalization, batch):
    diff = step_differences[f"{normalization}-{batch}"]["diff"]
    assert diff < 1e-5, f"mirrored and single-device weights differ by {diff}"


def test_batch_normalization_over_unequal_halves_is_not_the_single_device_step(
    step_differences,
):
    assert step_differences["batch-unequal"]["diff"] > 1e-3  # why check_settings refuses it


def test_batch_normalization_is_refused_with_several_replicas():
    from hybrid_tfrs.distribution import check_settings

    two = SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ValueError) as error:
        check_settings(
            TrainConfig(loss_normalization="batch", distribution_strategy="mirrored"), two
        )
    assert str(error.value).startswith("--loss_normalization='batch': each of the 2 replicas")
    assert "--distribution_strategy=mirrored" in str(error.value)
    assert "use --loss_normalization=target" in str(error.value)
    check_settings(TrainConfig(loss_normalization="target"), two)
    check_settings(TrainConfig(loss_normalization="batch"), SimpleNamespace(num_replicas_in_sync=1))


def test_max_train_minutes_is_refused_under_multi_worker():
    config = TrainConfig(max_train_minutes=5, distribution_strategy="multi_worker_mirrored")
    with pytest.raises(ValueError) as error:
        config.validate()
    message = str(error.value)
    assert message.startswith("--max_train_minutes=5: cannot be combined with ")
    assert "--distribution_strategy=multi_worker_mirrored" in message
    assert "use --epochs and --patience" in message


@pytest.mark.parametrize(
    "cluster, wrong",
    [
        ({"worker": ["localhost"]}, "cluster.worker[0]='localhost'"),
        ({"worker": ["a:1", "b:port"]}, "cluster.worker[1]='b:port'"),
        ({"worker": ["a:1"], "chief": [":2"]}, "cluster.chief[0]=':2'"),
    ],
)
def test_a_tf_config_address_needs_host_and_numeric_port(cluster, wrong):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    with pytest.raises(ValueError) as error:
        cluster_from_tf_config({"TF_CONFIG": tf_config})
    assert str(error.value).startswith(f"TF_CONFIG: {wrong} must be host:port, the port a number")


def test_the_trainer_names_a_tf_config_address_without_port(tmp_path):
    tf_config = {"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}
    result = run_python(
        "from hybrid_tfrs.cli import train; "
        f"train.run(['train', '--distribution_strategy=multi_worker_mirrored', "
        f"'--output_dir={tmp_path}'])",
        {"TF_CONFIG": json.dumps(tf_config)},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: TF_CONFIG: cluster.worker[0]='localhost' must be host:port, the port a number "
        '(e.g. "10.0.0.1:12345")'
    ]


# ------------------------------------------------------------- the trainer

# One layer: what is checked is how the trainer distributes, not the depth (each
# process traces and compiles the model; a second layer costs seconds every time).
SMALL = dict(
    dataset="synthetic",
    synthetic_users=300,
    max_len=30,
    hidden_dim=32,
    num_layers=1,
    batch_size=64,
    protocols="full",
    seed=0,
)
SMALL_RUN = [f"--{name}={value}" for name, value in SMALL.items()]


def test_the_trainer_runs_mirrored_over_two_logical_cpus(tmp_path):
    code = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hybrid_tfrs.cli import train
train.run(["train", *{SMALL_RUN!r}, "--epochs=1", "--distribution_strategy=mirrored",
           "--output_dir={tmp_path / "run"}"])
"""
    result = run_python(code, {}, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 replicas, 32 rows each" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1 and metrics["test"]["full"]["NDCG@10"] > 0


def test_two_workers_train_like_one_process_and_only_the_chief_writes(tmp_path):
    from hybrid_tfrs.training import TrainConfig, train

    ports = free_ports(2)
    shared = tmp_path / "two"
    multi = [
        *SMALL_RUN,
        "--epochs=3",
        "--patience=5",
        "--distribution_strategy=multi_worker_mirrored",
        f"--output_dir={shared}",
    ]
    workers = [start_worker(i, ports, multi, tmp_path / f"worker{i}.log") for i in range(2)]
    try:  # the one-process run of the same settings, here while the workers train
        config = TrainConfig(**SMALL, epochs=3, patience=5, output_dir=str(tmp_path / "one"))
        train(config, log=lambda _: None)
        codes = [worker.wait(timeout=900) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    assert "2 replicas, 32 rows each" in logs[0]
    assert "the chief evaluates and writes" in logs[1] and "wrote" not in logs[1]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["test"]["full"]["NDCG@10"]
    two = json.loads((shared / "metrics.json").read_text())["test"]["full"]["NDCG@10"]
    assert two >= 0.75 * one, (one, two)
    written = sorted(p.name for p in shared.iterdir())
    assert written == sorted(p.name for p in (tmp_path / "one").iterdir())  # no extra files
    assert not list(shared.rglob("*.tmp*"))


def test_a_worker_whose_peer_never_starts_fails_in_bounded_time_naming_it(tmp_path):
    flags = [*SMALL_RUN, "--distribution_strategy=multi_worker_mirrored"]
    flags += ["--collective_timeout_seconds=5", f"--output_dir={tmp_path / 'run'}"]
    clusters = [free_ports(2), free_ports(2)]  # worker 0 of one alone, worker 1 of the other
    workers = [start_worker(i, clusters[i], flags, tmp_path / f"alone{i}.log") for i in range(2)]
    try:
        codes = [worker.wait(timeout=90) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    logs = [(tmp_path / f"alone{i}.log").read_text() for i in range(2)]
    assert codes == [2, 2], logs
    for i, log in enumerate(logs):
        peer = 1 - i
        assert "Traceback" not in log
        assert [line for line in log.splitlines() if line.startswith("error:")] == [
            f"error: TF_CONFIG: worker {peer} (127.0.0.1:{clusters[i][peer]}) not reached "
            "within --collective_timeout_seconds=5 (started? at that host:port?)"
        ], log


def test_a_killed_worker_restarted_with_the_same_command_resumes_the_job(tmp_path):
    ports = free_ports(2)
    run = tmp_path / "run"
    flags = [
        *SMALL_RUN,
        "--epochs=4",
        "--patience=5",
        "--distribution_strategy=multi_worker_mirrored",
        "--collective_timeout_seconds=10",
        f"--output_dir={run}",
    ]
    workers = [start_worker(i, ports, flags, tmp_path / f"first{i}.log") for i in range(2)]
    state_path = run / "checkpoints" / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and workers[0].poll() is None:
        if state_path.exists() and json.loads(state_path.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.2)
    done_before = json.loads(state_path.read_text())["epochs_done"]
    assert 1 <= done_before < 4, (tmp_path / "first0.log").read_text()
    workers[1].kill()  # worker 1 dies mid-run
    assert workers[0].wait(timeout=300) != 0  # its peer gives up instead of hanging
    workers[1].wait()
    ports = free_ports(2)
    workers = [start_worker(i, ports, flags, tmp_path / f"again{i}.log") for i in range(2)]
    codes = [worker.wait(timeout=900) for worker in workers]
    chief_log = (tmp_path / "again0.log").read_text()
    assert codes == [0, 0], chief_log
    resumed = int(re.search(r"resuming after epoch (\d+)", chief_log).group(1))
    assert resumed >= done_before
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    assert f"epoch {resumed + 1}/4" in chief_log and "epoch 1/4" not in chief_log


def test_a_chief_killed_in_the_final_evaluation_finishes_alone_when_restarted(tmp_path):
    from hybrid_tfrs.training import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(**SMALL, epochs=1, output_dir=str(run)), log=lambda _: None)
    for name in ("metrics.json", "test_ranks.npz", "report.html"):  # as a kill leaves it
        (run / name).unlink()
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*")}
    flags = [*SMALL_RUN, "--epochs=1", "--distribution_strategy=multi_worker_mirrored"]
    flags += ["--collective_timeout_seconds=5", f"--output_dir={run}"]
    ports = free_ports(2)  # the chief's peer is not started: it is not needed
    other = start_worker(1, ports, flags, tmp_path / "worker1.log")
    assert other.wait(timeout=300) == 0, (tmp_path / "worker1.log").read_text()
    assert {path: path.stat().st_mtime_ns for path in run.rglob("*")} == before  # wrote nothing
    # before the data is loaded: its one line is all it prints
    assert (tmp_path / "worker1.log").read_text().strip() == WORKER_DONE
    chief = start_worker(0, ports, flags, tmp_path / "worker0.log")
    code = chief.wait(timeout=300)
    log = (tmp_path / "worker0.log").read_text()
    assert code == 0, log
    assert "training is done; the chief evaluates without the other workers" in log
    assert "not reached" not in log and "resuming after epoch 1" in log
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1 and metrics["test"]["full"]["NDCG@10"] > 0
