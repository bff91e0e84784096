"""Markdown table of the test metrics of finished training runs.

    python benchmarks/summarize_runs.py runs/beauty_*            # one row per run and protocol
    python benchmarks/summarize_runs.py runs/beauty_* --protocols=full,uniform-99 \
        --output=benchmarks/results/beauty_runs.md

Reads each run's metrics.json (written by trainers/train.py).
"""

import json
import os

from absl import app, flags

flags.DEFINE_list(
    "protocols", ["full", "full-unseen", "uniform-99", "pop-100"], "Protocols to list."
)
flags.DEFINE_list("metrics", ["HR@10", "NDCG@10", "MRR", "HR@20", "NDCG@20"], "Metrics to list.")
flags.DEFINE_string("output", None, "Also write the table to this file.")
FLAGS = flags.FLAGS


def table(run_dirs, protocols, metrics):
    """Rows: run x protocol; columns: the metrics, best epoch, epochs, s/epoch."""
    header = ["run", "dataset", "model", "protocol", *metrics, "best epoch", "epochs", "s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
            run = json.load(handle)
        for protocol in protocols:
            values = [f"{run['test'][protocol][m]:.4f}" for m in metrics]
            seconds = run.get("mean_epoch_seconds")
            lines.append(
                "| "
                + " | ".join(
                    [os.path.basename(os.path.normpath(run_dir)), run["dataset"], run["model"]]
                    + [protocol, *values]
                    + [str(run["best_epoch"]), str(run["epochs_trained"])]
                    + [f"{seconds:.0f}" if seconds else "-"]
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv):
    run_dirs = argv[1:]
    if not run_dirs:
        raise app.UsageError("name at least one run directory")
    missing = [d for d in run_dirs if not os.path.exists(os.path.join(d, "metrics.json"))]
    if missing:
        raise app.UsageError(f"no metrics.json in: {', '.join(missing)}")
    text = table(run_dirs, FLAGS.protocols, FLAGS.metrics)
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
