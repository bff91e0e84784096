"""Throughput and accuracy of 1 process against 2 workers (MultiWorkerMirroredStrategy).

    python benchmarks/distribution.py                     # writes results/distribution.md
    python benchmarks/distribution.py --epochs=2 --synthetic_users=500

Trains the same synthetic run once in one process and once as two local
workers (TF_CONFIG on 127.0.0.1), both through hybrid-tfrs-train, and reports
training examples per second (rows of the epoch / mean epoch seconds, without
validation) and the test NDCG@10 of each. Two workers on one machine share its
cores, so no speed-up is expected here: the point is that the results agree.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_integer("epochs", 3, "Epochs of each run.")
flags.DEFINE_integer("synthetic_users", 1000, "Users of the synthetic dataset.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_string("output", "benchmarks/results/distribution.md", "Results page.")
FLAGS = flags.FLAGS


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _flags(output_dir):
    return [
        "--dataset=synthetic",
        f"--synthetic_users={FLAGS.synthetic_users}",
        f"--epochs={FLAGS.epochs}",
        f"--patience={FLAGS.epochs}",
        f"--batch_size={FLAGS.batch_size}",
        "--protocols=full",
        f"--output_dir={output_dir}",
    ]


def _train(workers, output_dir):
    """Runs the trainer with ``workers`` processes; returns the chief's metrics.json."""
    command = [sys.executable, "-m", "hybrid_tfrs.cli.train", *_flags(output_dir)]
    if workers == 1:
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    else:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(workers)]}
        processes = []
        for index in range(workers):
            task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(task))
            processes.append(
                subprocess.Popen(
                    command + ["--distribution_strategy=multi_worker_mirrored"],
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for process in processes:
            _, stderr = process.communicate()
            if process.returncode:
                raise SystemExit(f"a worker failed:\n{stderr.decode()[-2000:]}")
    with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _training_rows():
    from hybrid_tfrs.data import load_dataset, training_examples

    _, split = load_dataset("synthetic", num_users=FLAGS.synthetic_users)
    return len(training_examples(split.train, 50)[0])


def main(argv):
    del argv
    rows = _training_rows()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers in (1, 2):
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            metrics = _train(workers, os.path.join(scratch, f"workers{workers}"))
            # The first epoch compiles; the rest measure the steady state.
            seconds = [row["epoch_seconds"] for row in metrics["history"][1:]]
            mean_seconds = sum(seconds) / len(seconds)
            results.append(
                {
                    "workers": workers,
                    "examples_per_second": rows / mean_seconds,
                    "epoch_seconds": mean_seconds,
                    "ndcg@10": metrics["test"]["full"]["NDCG@10"],
                    "wall_seconds": time.perf_counter() - started,
                    "load_before": load_before,
                }
            )
            print(results[-1], flush=True)
    lines = [
        "# Distributed training: 1 process against 2 workers",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only. Command: "
        f"`python benchmarks/distribution.py --epochs={FLAGS.epochs} "
        f"--synthetic_users={FLAGS.synthetic_users} --batch_size={FLAGS.batch_size}` "
        f"(synthetic data, {rows} training rows an epoch, global batch {FLAGS.batch_size}, "
        "the hybrid's defaults otherwise). Examples per second over the epochs after the "
        "first (which compiles), without validation; NDCG@10 of the test split, `full`.",
        "",
        "| workers | examples/s | s/epoch | test NDCG@10 | wall s | load average before |",
        "|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['workers']} | {row['examples_per_second']:.0f} | {row['epoch_seconds']:.1f} "
            f"| {row['ndcg@10']:.4f} | {row['wall_seconds']:.0f} | {row['load_before']:.2f} |"
        )
    lines += [
        "",
        "Both workers run on the same 2 cores, so two workers cannot be faster here; each "
        "also pays the cross-process all-reduce of every step's gradients over loopback.",
        "",
    ]
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
