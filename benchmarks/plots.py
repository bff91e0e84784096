"""PNG plots of the accuracy campaign, drawn from the runs' metrics.json files.

``draw_all(runs, out_dir)`` with ``runs`` = {(dataset, name, flagfile,
overrides): [metrics dict of each seed]} as benchmarks/accuracy.py collects them.
The bar and gate plots have one panel per dataset and average the seeds; the
validation curves have one row per dataset and draw every seed.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from campaign_plan import BATCH_LOSS  # noqa: E402  (runs of the earlier, batch-mean recipe)

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
    fig.savefig(path, dpi=120, bbox_inches="tight")
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


def _is_main(name):
    """A main model, under either recipe."""
    return name.removesuffix(BATCH_LOSS) in MAIN_MODELS


def _in_order(names):
    """The main models (either recipe) in MAIN_MODELS order, then the others as they come."""

    def rank(name):
        if _is_main(name):
            return MAIN_MODELS.index(name.removesuffix(BATCH_LOSS))
        return len(MAIN_MODELS)

    return sorted(names, key=rank)


def _colours(grouped):
    """A distinct colour for each model of the figure, the same in every panel."""
    ordered = _in_order(list(dict.fromkeys(n for models in grouped.values() for n in models)))
    palette = plt.get_cmap("tab10" if len(ordered) <= 10 else "tab20").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(ordered)}


def _legend_outside(ax):
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _gated(grouped):
    """The models with a gate alpha, by dataset; datasets without one left out."""
    gated = {
        dataset: {n: seeds for n, seeds in models.items() if seeds[0]["test_alpha"] is not None}
        for dataset, models in grouped.items()
    }
    return {dataset: models for dataset, models in gated.items() if models}


def alpha_by_length(gated, path):
    colours = _colours(gated)
    fig, axes = _figure(gated)
    for ax, (dataset, models) in zip(axes, gated.items()):
        for name in _in_order(list(models)):
            labels, users, values = _bucket_series(models[name], lambda b: b["alpha"])
            ax.plot(range(len(labels)), values, marker="o", color=colours[name], label=name)
        _length_axis(ax, range(len(labels)), labels, users)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean gate alpha (1 = linear attention)")
        ax.set_title(dataset)
        _legend_outside(ax)
    return _save(fig, path)


def validation_curves(grouped, path):
    """Validation NDCG@10 of every seed against epoch (left) and training hours (right).

    One row per dataset; a model keeps its colour in both panels, and main
    models are drawn thicker than ablations. Hours are epochs times the run's
    median epoch time, so a paused or crowded epoch does not stretch the curve.
    The y axis starts at 60 % of the best score, where convergence shows. Each
    run's score is under its own ``--validation_protocol`` (``full`` unless
    its name says ``unseen-validation``).
    """
    fig, axes = plt.subplots(len(grouped), 2, figsize=(15, 4.5 * len(grouped)), squeeze=False)
    colours = _colours(grouped)
    for row, (dataset, models) in enumerate(grouped.items()):
        best = 0.0
        for name in _in_order(list(models)):
            for index, run in enumerate(models[name]):
                epochs = [entry["epoch"] for entry in run["history"]]
                scores = [entry["val_ndcg@10"] for entry in run["history"]]
                seconds = np.median([entry["epoch_seconds"] for entry in run["history"]])
                hours = [epoch * seconds / 3600.0 for epoch in epochs]
                style = dict(
                    color=colours[name],
                    linewidth=1.6 if _is_main(name) else 0.9,
                    linestyle="-" if _is_main(name) else "--",
                    label=None if index else name,
                )
                axes[row][0].plot(epochs, scores, **style)
                axes[row][1].plot(hours, scores, **style)
                best = max([best] + scores)
        for column, label in ((0, "epoch"), (1, "training hours (epochs x median epoch time)")):
            ax = axes[row][column]
            ax.set_xlabel(label)
            ax.set_ylabel("validation NDCG@10")
            ax.set_ylim(0.6 * best, 1.02 * best)
            ax.set_title(f"{dataset} (every seed)")
            ax.grid(alpha=0.3)
        _legend_outside(axes[row][1])
    return _save(fig, path)


def _split_by_recipe(grouped):
    """[(file suffix, {dataset: {name: seeds}})]: the current recipe, then the batch mean."""
    parts = []
    for suffix, earlier in (("", False), ("_batch_loss", True)):
        part = {
            dataset: {n: s for n, s in models.items() if n.endswith(BATCH_LOSS) == earlier}
            for dataset, models in grouped.items()
        }
        part = {dataset: models for dataset, models in part.items() if models}
        if part:
            parts.append((suffix, part))
    return parts


def draw_all(runs, out_dir):
    """Writes the PNGs; returns their paths.

    ``ndcg_by_length.png`` compares the main models. The gate and validation
    plots come once per recipe: ``alpha_by_length.png`` and
    ``validation_curves.png`` for the current one, the same names with
    ``_batch_loss`` for the ``-batch-loss`` runs, so that neither is crowded.
    """
    grouped = _by_dataset(runs)
    if not grouped:
        return []
    paths = [ndcg_by_length(grouped, os.path.join(out_dir, "ndcg_by_length.png"))]
    for suffix, part in _split_by_recipe(grouped):
        gated = _gated(part)
        if gated:
            path = os.path.join(out_dir, f"alpha_by_length{suffix}.png")
            paths.append(alpha_by_length(gated, path))
        path = os.path.join(out_dir, f"validation_curves{suffix}.png")
        paths.append(validation_curves(part, path))
    return paths
