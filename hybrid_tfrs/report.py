"""A run's report: ``report.html`` beside its ``metrics.json``, for a person to look at.

One self-contained HTML file (figures embedded as PNG): the test metrics under
each protocol, validation NDCG@10 by epoch (the best epoch marked), test
NDCG@10 by history-length bucket and, for the hybrid, the mean gate alpha by
bucket. Drawn with matplotlib (Agg, no display needed) from ``metrics.json``
alone, so ``write_report(run_dir)`` also redraws it for an old run.
"""

import base64
import html
import io
import json
import os

from hybrid_tfrs.run_dir import write_atomically

REPORT_FILE = "report.html"
HEADLINE = ("HR@10", "NDCG@10", "MRR")


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _validation_figure(plt, history, best_epoch, protocol):
    figure, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["val_ndcg@10"] for row in history], marker="o", markersize=3)
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation NDCG@10 ({protocol})")
    ax.grid(alpha=0.3)
    return figure


def _bucket_figure(plt, buckets, value, ylabel, series):
    """One line per series name over the history-length buckets."""
    figure, ax = plt.subplots(figsize=(6, 3.5))
    ticks = range(len(buckets))
    for name in series:
        ax.plot(ticks, [value(bucket, name) for bucket in buckets], marker="o", label=name)
    ax.set_xticks(list(ticks))
    ax.set_xticklabels([f"{b['bucket']}\n({b['users']} users)" for b in buckets], fontsize=8)
    ax.set_xlabel("history length")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return figure


def _metrics_table(test):
    header = "".join(f"<th>{m}</th>" for m in HEADLINE)
    rows = "".join(
        f"<tr><td>{html.escape(protocol)}</td>"
        + "".join(f"<td>{values[m]:.4f}</td>" if m in values else "<td>-</td>" for m in HEADLINE)
        + "</tr>"
        for protocol, values in test.items()
    )
    return f"<table><tr><th>protocol</th>{header}</tr>{rows}</table>"


def render_report(metrics):
    """The report's HTML for a ``metrics.json`` dict (see hybrid_tfrs.training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    if metrics.get("history"):
        figures.append(
            (
                "Validation",
                _validation_figure(
                    plt,
                    metrics["history"],
                    metrics.get("best_epoch"),
                    metrics.get("config", {}).get("validation_protocol", "full"),
                ),
            )
        )
    buckets = metrics.get("test_buckets") or []
    if buckets:
        protocols = list(buckets[0]["metrics"])
        figures.append(
            (
                "Test NDCG@10 by history length",
                _bucket_figure(
                    plt,
                    buckets,
                    lambda b, p: b["metrics"][p]["NDCG@10"],
                    "test NDCG@10",
                    protocols,
                ),
            )
        )
        if any(b.get("alpha") is not None for b in buckets):
            figures.append(
                (
                    "Gate alpha by history length (share of the LinRec branch)",
                    _bucket_figure(plt, buckets, lambda b, _: b["alpha"], "mean alpha", ["alpha"]),
                )
            )
    images = []
    for title, figure in figures:
        images.append(
            f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{_png(figure)}'>"
        )
        plt.close(figure)
    config = metrics.get("config", {})
    minutes = metrics.get("train_minutes")
    facts = (
        f"{html.escape(str(metrics.get('model')))} on {html.escape(str(metrics.get('dataset')))}: "
        f"best epoch {metrics.get('best_epoch')} of {metrics.get('epochs_trained')}"
        + (f", {minutes:.1f} minutes of training" if minutes is not None else "")
        + (f", {metrics['parameters']:,} encoder parameters" if "parameters" in metrics else "")
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>hybrid-tfrs run: {html.escape(str(config.get('output_dir', '')))}</title>"
        "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:right}</style></head><body>"
        f"<h1>Run report</h1><p>{facts}</p><h2>Test metrics of the best model</h2>"
        f"{_metrics_table(metrics.get('test', {}))}{''.join(images)}"
        f"<h2>Settings</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>"
        "</body></html>"
    )


def write_report(run_dir):
    """Writes ``<run_dir>/report.html`` from ``<run_dir>/metrics.json``; returns its path."""
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    path = os.path.join(run_dir, REPORT_FILE)
    page = render_report(metrics)

    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(page)

    write_atomically(path, write)
    return path
