"""PNG plots of the accuracy campaign, drawn from the runs' metrics.json files.

``draw_all(runs, out_dir)`` with ``runs`` = {(dataset, name, flagfile,
overrides): [metrics dict of each seed]} as benchmarks/accuracy.py collects them.
Each figure has one panel per dataset; seeds are averaged.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAIN_MODELS = ("hybrid", "linrec", "fmlp", "sasrec")


def _by_dataset(runs):
    grouped = {}
    for (dataset, name, _, _), metrics in runs.items():
        grouped.setdefault(dataset, {})[name] = metrics
    return grouped


def _bucket_series(seeds, value):
    """(labels, users, mean value) over the length buckets of the test split."""
    labels = [b["bucket"] for b in seeds[0]["test_buckets"]]
    users = [b["users"] for b in seeds[0]["test_buckets"]]
    values = [[value(run["test_buckets"][i]) for run in seeds] for i in range(len(labels))]
    return labels, users, [np.mean(v) if None not in v else np.nan for v in values]


def _figure(datasets):
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    return fig, axes[0]


def _length_axis(ax, ticks, labels, users):
    """x axis of the length buckets, each labelled with its number of users."""
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{lab}\n({n})" for lab, n in zip(labels, users)], fontsize=8)
    ax.set_xlabel("history length (users)")


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ndcg_by_length(grouped, path, protocol="full"):
    fig, axes = _figure(grouped)
    for ax, (dataset, models) in zip(axes, grouped.items()):
        names = [m for m in MAIN_MODELS if m in models]
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            labels, users, values = _bucket_series(
                models[name], lambda b: b["metrics"][protocol]["NDCG@10"]
            )
            ax.bar(np.arange(len(labels)) + i * width, values, width, label=name)
        _length_axis(ax, np.arange(len(labels)) + 0.4 - width / 2, labels, users)
        ax.set_ylabel(f"test NDCG@10 ({protocol})")
        ax.set_title(dataset)
        ax.legend()
    return _save(fig, path)


def alpha_by_length(grouped, path):
    fig, axes = _figure(grouped)
    for ax, (dataset, models) in zip(axes, grouped.items()):
        for name, seeds in models.items():
            if seeds[0]["test_alpha"] is None:
                continue
            labels, users, values = _bucket_series(seeds, lambda b: b["alpha"])
            ax.plot(range(len(labels)), values, marker="o", label=name)
        _length_axis(ax, range(len(labels)), labels, users)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean gate alpha (1 = linear attention)")
        ax.set_title(dataset)
        ax.legend()
    return _save(fig, path)


def validation_curves(grouped, path):
    """Validation NDCG@10 of every seed against epoch (top) and training hours (bottom).

    Hours are epochs times the run's median epoch time, so a paused or crowded
    epoch does not stretch the curve.
    """
    fig, axes = plt.subplots(2, len(grouped), figsize=(6 * len(grouped), 8), squeeze=False)
    for column, (dataset, models) in enumerate(grouped.items()):
        for color, (name, seeds) in enumerate(models.items()):
            for index, run in enumerate(seeds):
                epochs = [row["epoch"] for row in run["history"]]
                scores = [row["val_ndcg@10"] for row in run["history"]]
                seconds = np.median([row["epoch_seconds"] for row in run["history"]])
                hours = [epoch * seconds / 3600.0 for epoch in epochs]
                style = dict(color=f"C{color % 10}", linewidth=1, label=None if index else name)
                axes[0][column].plot(epochs, scores, **style)
                axes[1][column].plot(hours, scores, **style)
        for row, label in ((0, "epoch"), (1, "training hours (epochs x median epoch time)")):
            ax = axes[row][column]
            ax.set_xlabel(label)
            ax.set_ylabel("validation NDCG@10 (full)")
            ax.set_title(f"{dataset} (every seed)")
            ax.legend(fontsize=7)
    return _save(fig, path)


def draw_all(runs, out_dir):
    """Writes the three PNGs; returns their paths."""
    grouped = _by_dataset(runs)
    if not grouped:
        return []
    return [
        ndcg_by_length(grouped, os.path.join(out_dir, "ndcg_by_length.png")),
        alpha_by_length(grouped, os.path.join(out_dir, "alpha_by_length.png")),
        validation_curves(grouped, os.path.join(out_dir, "validation_curves.png")),
    ]
