"""How much of a trained model's top-10 its users have already seen.

For each run folder, on its test users (the query at each user's last item,
scored as the model scores, its learned seen-item offset included):

- ``full`` and ``full-unseen`` NDCG@10 (the gap between them is what the
  history's own items cost the model under ``full``);
- the mean number of history items in the top-10, and the share of users with
  at least one;
- for k = 1..5, the share of users whose k-th latest item is in their top-10;
- the mean number of top-10 items the user read before the model's window
  (the latest ``max_len`` items): the model never sees them, and
  ``full-unseen`` leaves them out;
- the learned seen-item offset (``--seen_item_bias``), if the model has one,
  and with ``--try_offsets`` the test NDCG@10 with other values in its place.

    python benchmarks/seen_items.py --data_dir=../shared/data \
        --run_dirs=runs/ml-1m_hybrid,runs/beauty_hybrid \
        --output=benchmarks/results/seen_items.md [--try_offsets=-8,-20]
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS

TOP = 10
LATEST = 5


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def seen_in_top(top, histories):
    """(number of history items in each top-10 [B], [B, LATEST] whether the k-th
    latest item is in it); histories left-aligned, 0-padded."""
    in_top = (top[:, :, None] == histories[:, None, :]) & (histories[:, None, :] > 0)
    count = in_top.any(axis=2).sum(axis=1)  # each top slot counted once
    lengths = np.count_nonzero(histories, axis=1)
    latest = np.zeros((len(top), LATEST), bool)
    for k in range(LATEST):
        position = lengths - 1 - k
        valid = position >= 0
        items = histories[np.arange(len(top)), np.maximum(position, 0)]
        latest[:, k] = valid & (top == items[:, None]).any(axis=1)
    return count, latest


def earlier_in_top(top, whole_histories, window):
    """[B] number of each top-10's items that the user read before the model's
    window (the latest ``window`` items), and not in it."""
    counts = []
    for row, history in zip(top, whole_histories):
        earlier = set(history[:-window]) - set(history[-window:])
        counts.append(sum(int(item) in earlier for item in row))
    return np.asarray(counts)


def ndcg_at_10(ranks):
    """{protocol: NDCG@10} of {protocol: int ranks [U]}."""
    from hybrid_tfrs.evaluation import metrics_from_ranks

    return {name: metrics_from_ranks(r)["NDCG@10"] for name, r in ranks.items()}


def diagnose(run_dir, data_dir, batch_size, try_offsets=()):
    from hybrid_tfrs import run_dir as runs
    from hybrid_tfrs.data.pipeline import pad_latest
    from hybrid_tfrs.run_data import load_split
    from hybrid_tfrs.training import load_run_model, split_ranks

    config = runs.read_config(run_dir)
    if data_dir:
        config.data_dir = data_dir
    _, split = load_split(config, in_memory=True)
    model = load_run_model(os.path.join(run_dir, runs.BEST_MODEL_FILE))
    ranks, _ = split_ranks(
        model, split, "test", config.max_len, ("full", "full-unseen"), batch_size=batch_size
    )
    histories = pad_latest(split.test_histories, config.max_len)
    counts, earlier, latest = [], [], []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        top = np.asarray(model.recommend(batch, k=TOP)[0])
        count, k_latest = seen_in_top(top, batch)
        counts.append(count)
        latest.append(k_latest)
        whole = split.test_histories[start : start + batch_size]
        earlier.append(earlier_in_top(top, whole, config.max_len))
    counts, earlier, latest = (np.concatenate(x) for x in (counts, earlier, latest))
    with_offset = {}
    if try_offsets and model.seen_bias is not None:
        learned = model.seen_item_bias
        for value in try_offsets:
            model.seen_bias.bias.assign(value)
            tried, _ = split_ranks(
                model, split, "test", config.max_len, ("full", "full-unseen"), batch_size=batch_size
            )
            with_offset[str(value)] = ndcg_at_10(tried)
        model.seen_bias.bias.assign(learned)
    return {
        "run_dir": run_dir,
        "dataset": config.dataset,
        "model": config.model,
        "seen_item_bias": model.seen_item_bias,
        "users": int(len(histories)),
        "ndcg@10": ndcg_at_10(ranks),
        "history_items_in_top10": float(counts.mean()),
        "earlier_history_items_in_top10": float(earlier.mean()),
        "users_with_a_history_item_in_top10": float((counts > 0).mean()),
        "kth_latest_in_top10": [float(v) for v in latest.mean(axis=0)],
        "ndcg@10_with_offset": with_offset,
    }


def markdown(results):
    lines = [
        "| run | dataset | model | users | learned offset | full NDCG@10 | full-unseen NDCG@10 "
        "| history items in top-10 | users with one | latest item in top-10 "
        "| 2nd | 3rd | 4th | 5th | items from before the window in top-10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        bias = "-" if r["seen_item_bias"] is None else f"{r['seen_item_bias']:.2f}"
        latest = " | ".join(f"{v:.3f}" for v in r["kth_latest_in_top10"])
        lines.append(
            f"| {r['run_dir']} | {r['dataset']} | {r['model']} | {r['users']} | {bias} "
            f"| {r['ndcg@10']['full']:.4f} | {r['ndcg@10']['full-unseen']:.4f} "
            f"| {r['history_items_in_top10']:.2f} "
            f"| {r['users_with_a_history_item_in_top10']:.3f} | {latest} "
            f"| {r['earlier_history_items_in_top10']:.2f} |"
        )
    tried = [r for r in results if r["ndcg@10_with_offset"]]
    if tried:
        lines += [
            "",
            "Test NDCG@10 with the learned offset replaced by each value (full / full-unseen):",
            "",
            "| run | learned | " + " | ".join(tried[0]["ndcg@10_with_offset"]) + " |",
            "|---|---|" + "---|" * len(tried[0]["ndcg@10_with_offset"]),
        ]
        for r in tried:
            cells = [
                f"{v['full']:.4f} / {v['full-unseen']:.4f}"
                for v in r["ndcg@10_with_offset"].values()
            ]
            ndcg = r["ndcg@10"]
            learned = f"{r['seen_item_bias']:.2f}: {ndcg['full']:.4f} / {ndcg['full-unseen']:.4f}"
            lines.append(f"| {r['run_dir']} | {learned} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(_):
    from hybrid_tfrs.cli.common import quiet_tensorflow

    quiet_tensorflow()
    offsets = [float(value) for value in FLAGS.try_offsets]
    results = [diagnose(run, FLAGS.data_dir, FLAGS.batch_size, offsets) for run in FLAGS.run_dirs]
    table = markdown(results)
    print(table)
    if FLAGS.output:
        command = (
            f"python benchmarks/seen_items.py --data_dir={FLAGS.data_dir} "
            f"--run_dirs={','.join(FLAGS.run_dirs)} --output={FLAGS.output}"
        )
        if offsets:
            command += f" --try_offsets={','.join(FLAGS.try_offsets)}"
        with open(FLAGS.output, "w") as handle:
            handle.write(f"# Already-seen items in the top-10\n\nCommand: `{command}`\n\n{table}")
        with open(os.path.splitext(FLAGS.output)[0] + ".json", "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":  # flags defined here: tests import this file beside others
    flags.DEFINE_list("run_dirs", None, "Output folders of trained runs (hybrid-tfrs-train).")
    flags.DEFINE_string("data_dir", None, "Folder of the dataset files (as for training).")
    flags.DEFINE_integer("batch_size", 256, "Test users per batch.", lower_bound=1)
    flags.DEFINE_string("output", None, "Markdown file to write (a .json beside it).")
    flags.DEFINE_list(
        "try_offsets",
        [],
        "Seen-item offsets to score the test users with in place of the learned one "
        "(runs trained with --seen_item_bias).",
    )
    flags.register_validator(
        "try_offsets",
        lambda values: all(_is_number(v) for v in values),
        "--try_offsets must be numbers, e.g. -8,-20",
    )
    flags.mark_flag_as_required("run_dirs")
    app.run(main)
