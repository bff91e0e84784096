"""Markdown tables of training runs: test metrics of finished runs, or where runs stand.

    python benchmarks/summarize_runs.py runs/beauty_*            # one row per run and protocol
    python benchmarks/summarize_runs.py runs/beauty_* --protocols=full,uniform-99 \
        --output=benchmarks/results/beauty_runs.md
    python benchmarks/summarize_runs.py --progress runs/accuracy/*/*/seed*

The test table reads each run's metrics.json (written by trainers/train.py).
``--progress`` reads config.json and checkpoints/state.json (written after every
epoch), so it works while runs train or after they were stopped: epochs done,
the best validation NDCG@10 and its epoch, epochs without improvement against
the patience, the median epoch time and the hours so far (epochs x that median,
so pauses do not count), and whether the run finished (and what stopped it) or
resumes with its own command.
"""

import json
import os
import statistics

from absl import app, flags

flags.DEFINE_list(
    "protocols", ["full", "full-unseen", "uniform-99", "pop-100"], "Protocols to list."
)
flags.DEFINE_list("metrics", ["HR@10", "NDCG@10", "MRR", "HR@20", "NDCG@20"], "Metrics to list.")
flags.DEFINE_string("output", None, "Also write the table to this file.")
flags.DEFINE_boolean("progress", False, "Where each run stands instead of its test metrics.")
FLAGS = flags.FLAGS


def table(run_dirs, protocols, metrics):
    """Rows: run x protocol; columns: the metrics, best epoch, epochs, median s/epoch.

    A run is named by the last two parts of its folder (``hybrid-cosine/seed0``).
    """
    header = ["run", "dataset", "model", "protocol", *metrics, "best epoch", "epochs", "s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_dir in run_dirs:
        run = _read(os.path.join(run_dir, "metrics.json"))
        for protocol in protocols:
            values = [f"{run['test'][protocol][m]:.4f}" for m in metrics]
            seconds = run.get("median_epoch_seconds", run.get("mean_epoch_seconds"))
            lines.append(
                "| "
                + " | ".join(
                    [_short_name(run_dir), run["dataset"], run["model"]]
                    + [protocol, *values]
                    + [str(run["best_epoch"]), str(run["epochs_trained"])]
                    + [f"{seconds:.0f}" if seconds else "-"]
                )
                + " |"
            )
    return "\n".join(lines)


PROGRESS_HEADER = (
    "run",
    "dataset",
    "model",
    "seed",
    "schedule",
    "epochs",
    "best val NDCG@10 (epoch)",
    "last val",
    "waited / patience",
    "min/epoch (median)",
    "hours",
    "status",
)


def _short_name(run_dir):
    parts = os.path.normpath(run_dir).split(os.sep)
    return "/".join(parts[-2:])


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def progress_row(run_dir):
    """The table cells of one run folder; None if it holds no config.json yet."""
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        return None
    config = _read(config_path)
    state_path = os.path.join(run_dir, "checkpoints", "state.json")
    state = _read(state_path) if os.path.exists(state_path) else {"history": []}
    history = state["history"]
    seconds = statistics.median(r["epoch_seconds"] for r in history) if history else None
    metrics_path = os.path.join(run_dir, "metrics.json")
    metrics = _read(metrics_path) if os.path.exists(metrics_path) else {}
    if history and metrics.get("epochs_trained") == len(history):
        status = "finished: " + metrics.get("stopped_by", "stopped")
    else:  # a metrics.json of fewer epochs is from before the run was resumed for more
        status = "in progress (rerun its command to resume)" if history else "not started"
    return [
        run_dir,
        config["dataset"],
        config["model"],
        str(config["seed"]),
        config.get("lr_schedule", "constant"),
        str(len(history)),
        f"{state['best_score']:.4f} ({state['best_epoch']})" if history else "-",
        f"{history[-1]['val_ndcg@10']:.4f}" if history else "-",
        f"{state.get('waited', 0)} / {config['patience']}",
        f"{seconds / 60:.1f}" if seconds else "-",
        f"{len(history) * seconds / 3600:.1f}" if seconds else "-",
        status,
    ]


def progress_table(run_dirs):
    rows = [row for row in map(progress_row, run_dirs) if row is not None]
    lines = ["| " + " | ".join(PROGRESS_HEADER) + " |", "|" + "---|" * len(PROGRESS_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv):
    run_dirs = argv[1:]
    if not run_dirs:
        raise app.UsageError("name at least one run directory")
    if FLAGS.progress:
        _write(progress_table(run_dirs))
        return
    missing = [d for d in run_dirs if not os.path.exists(os.path.join(d, "metrics.json"))]
    if missing:
        raise app.UsageError(f"no metrics.json in: {', '.join(missing)}")
    _write(table(run_dirs, FLAGS.protocols, FLAGS.metrics))


def _write(text):
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
