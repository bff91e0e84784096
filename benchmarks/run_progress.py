"""Where long training runs stand: one row per run folder, finished or not.

    python benchmarks/run_progress.py runs/accuracy/*/*/seed*
    python benchmarks/run_progress.py runs/accuracy/*/*/seed* --output=progress.md

Reads each run's config.json and checkpoints/state.json (written after every
epoch), so it works while runs train or after they were stopped: epochs done,
the best validation NDCG@10 and its epoch, epochs without improvement against
the patience, the median epoch time and the hours so far (epochs x that median,
so pauses do not count), and whether the run finished (and what stopped it:
metrics.json) or resumes with its own command.
"""

import json
import os
import statistics

from absl import app, flags

flags.DEFINE_string("output", None, "Also write the table to this file.")
FLAGS = flags.FLAGS

HEADER = (
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


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def run_row(run_dir):
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


def table(run_dirs):
    rows = [row for row in map(run_row, run_dirs) if row is not None]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv):
    if not argv[1:]:
        raise app.UsageError("name at least one run directory")
    text = table(argv[1:])
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
