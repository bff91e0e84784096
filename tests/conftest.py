"""Shared test settings: quiet TensorFlow, the real-data folder, subprocess helpers."""

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def load_benchmark(name):
    """The module of ``benchmarks/<name>.py`` (the scripts are not a package), loaded
    once a process: a script defines absl flags, which cannot be defined twice."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


def _child_env(env_overrides):
    """This process's environment for a fresh interpreter: quiet TensorFlow, the
    overrides, and no PYTEST_CURRENT_TEST."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env_overrides)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def run_python(code, env_overrides, timeout=600):
    """Runs ``code`` in a fresh interpreter with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=_child_env(env_overrides),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_python(code, env_overrides, log_path):
    """Starts ``code`` in a fresh interpreter as :func:`run_python` runs it, its stdout
    and stderr into ``log_path``; the Popen, to ``wait`` for while the test goes on."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env=_child_env(env_overrides),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
        )


def run_command(args, timeout=600):
    """Runs ``python <args>`` from the repository root; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def train_run(output_dir, *train_flags):
    """Trains with ``hybrid-tfrs-train <train_flags> --output_dir=<output_dir>``;
    fails the test with the trainer's stderr if it exits non-zero."""
    trained = run_command(
        ["-m", "hybrid_tfrs.cli.train", *train_flags, f"--output_dir={output_dir}"]
    )
    assert trained.returncode == 0, trained.stderr[-3000:]


def straight_and_resumed(folder, settings, epochs=4, stop_after=2):
    """The same training twice: ``epochs`` straight, and stopped after ``stop_after``
    then resumed. Returns (straight metrics, resumed metrics, the resume's log lines);
    the runs are in ``folder``/straight and ``folder``/resumed.

    The stopped run is the straight run's folder as it was once epoch ``stop_after``
    was saved (copied before the next epoch starts), plus the next epoch's weights
    file written as the run writes it: what a run killed between saving those weights
    and the state that names them leaves, without training its first epochs again."""
    import keras

    from hybrid_tfrs import run_dir
    from hybrid_tfrs.training import TrainConfig, train

    straight, resumed = (str(Path(folder) / name) for name in ("straight", "resumed"))

    class StopHere(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == stop_after:  # epoch ``stop_after``'s files are all written
                shutil.copytree(straight, resumed)

        def on_epoch_end(self, epoch, logs=None):  # before the run saves this epoch
            if epoch == stop_after:
                name = run_dir.LAST_MODEL_FILE.format(epoch=epoch + 1)
                self.model.save(os.path.join(resumed, run_dir.CHECKPOINT_DIR, name))

    config = TrainConfig(epochs=epochs, output_dir=straight, **settings)
    whole = train(config, log=lambda _: None, callbacks=[StopHere()])
    assert os.path.isdir(resumed), f"the straight run never began epoch {stop_after + 1}"
    lines = []
    parts = train(TrainConfig(epochs=epochs, output_dir=resumed, **settings), log=lines.append)
    return whole, parts, lines


def losses_and_scores(metrics):
    """[(training loss, validation NDCG@10)] of each epoch of a run's metrics.json."""
    return [(row["loss"], row["val_ndcg@10"]) for row in metrics["history"]]


def full_ndcg_at_10(score_matrix, split, histories, targets):
    """Full-ranking NDCG@10 of ``score_matrix(histories [B, L]) -> [B, N + 1]``."""
    from hybrid_tfrs.evaluation import evaluate

    return evaluate(
        lambda h: {"scores": score_matrix(h)},
        histories,
        np.asarray(targets),
        split.user_items,
        split.num_items,
        split.item_popularity,
        protocols=("full",),
        progress=False,
    )["protocols"]["full"]["NDCG@10"]


def most_popular_scores(split, seed=0):
    """Score matrix function of the most-popular baseline (ties broken at random)."""
    popularity = split.item_popularity.astype("float64")
    popularity += np.random.default_rng(seed).random(popularity.shape) * 1e-6
    return lambda h: np.tile(popularity, (len(h), 1))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_worker(index, ports, flags, log_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = dict(
        os.environ,
        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    command = [sys.executable, "-m", "hybrid_tfrs.cli.train", *flags]
    with open(log_path, "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
