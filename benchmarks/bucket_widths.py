"""Seconds per training epoch under different length-bucket widths (``--bucket_widths``).

    python benchmarks/bucket_widths.py --data_dir=../shared/data \
        --flagfile=flags/beauty_hybrid.flags --buckets="default;2,3,4,6,8,12,16,24,32"

For each width list (``;``-separated, ``default`` = 8, 16, 32, ...) the run's
model is built from the flagfile, trained one untimed epoch (every width's step
is traced and compiled) and then ``--rounds`` timed epochs, the settings
alternating round by round on one machine. Reported per setting: the compiled
widths, the share of batch positions that hold a target (the rest is padding
the step computes for nothing), and seconds per epoch of training steps alone
(no validation). Then one validation pass (full ranking of every user) with
the trainer's evaluation, histories bucketed by length in traced graphs
(training.score_function), beside the same pass with the model called eagerly
at full width. Appends a section to ``--output``.
"""

import os
import platform
import shlex
import statistics
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from results_page import append_section  # noqa: E402

from hybrid_tfrs.cli.train_flags import config_from_flags, define_train_flags  # noqa: E402

define_train_flags(flags.FLAGS)  # the trainer's flags (--flagfile, --max_len, ...) beside ours
flags.DEFINE_string("buckets", "default;2,3,4,6,8,12,16,24,32", "Width lists, ';'-separated.")
flags.DEFINE_integer("rounds", 2, "Timed epochs per setting, alternating.")
flags.DEFINE_string("output", "benchmarks/results/bucket_widths.md", "Results page (appended).")
FLAGS = flags.FLAGS


def _settings():
    return [None if s.strip() == "default" else s.strip() for s in FLAGS.buckets.split(";")]


def _epoch_seconds(model, dataset):
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return time.perf_counter() - started


def _target_counts(dataset):
    """(targets / batch positions, targets / batches) over one epoch of ``dataset``."""
    targets = positions = batches = 0
    for _, batch_targets in dataset:
        targets += int((batch_targets.numpy() > 0).sum())
        positions += batch_targets.shape[0] * batch_targets.shape[1]
        batches += 1
    return targets / positions, targets / batches


def _validation_seconds(model, split, config):
    """Seconds of one validation pass: the trainer's score_function against an eager call."""
    import keras

    from hybrid_tfrs.data import pad_latest
    from hybrid_tfrs.evaluation import evaluate
    from hybrid_tfrs.training import item_embeddings, score_function

    def eager(histories):
        query, alpha = model.query_embedding(histories, return_alpha=True)
        result = {"query": keras.ops.convert_to_numpy(query)}
        if alpha is not None:
            result["alpha"] = keras.ops.convert_to_numpy(alpha)
        return result

    seconds = {}
    for name, score_fn in (("bucketed", score_function(model)), ("eager", eager)):
        started = time.perf_counter()
        evaluate(
            score_fn,
            pad_latest(split.valid_histories, config.max_len),
            split.valid_targets,
            user_items=split.user_items,
            num_items=split.num_items,
            seen_items=split.valid_histories,
            item_embeddings=item_embeddings(model),
            protocols=("full",),
            batch_size=config.eval_batch_size,
            progress=False,
        )
        seconds[name] = time.perf_counter() - started
    return seconds


def main(argv):
    import keras

    from hybrid_tfrs.data.pipeline import batch_widths, training_dataset
    from hybrid_tfrs.training import build_model, compile_model, load_split

    base = config_from_flags()
    _, split = load_split(base)
    runs = []
    for setting in _settings():
        widths = None if setting is None else [int(w) for w in setting.split(",")]
        dataset = training_dataset(
            split.train,
            base.max_len,
            base.batch_size,
            seed=base.seed,
            bucket_by_length=True,
            window_stride=base.window_stride,
            bucket_widths=widths,
        )
        density, targets_per_batch = _target_counts(dataset)
        keras.utils.set_random_seed(base.seed)
        model = build_model(base, split.num_items, split.item_popularity, targets_per_batch)
        compile_model(model, base, steps_per_epoch=int(dataset.cardinality()))
        runs.append(
            dict(
                widths=batch_widths(base.max_len, widths),
                dataset=dataset,
                model=model,
                density=density,
                seconds=[],
            )
        )
    # Warm up only once every model is built: keras.utils.set_random_seed, called before
    # each build, makes the models built before it trace their steps again.
    for run in runs:
        run["warmup"] = _epoch_seconds(run["model"], run["dataset"])
        print(f"{run['widths']}: warm-up epoch {run['warmup']:.0f} s", flush=True)
    load_before = os.getloadavg()[0]
    for _ in range(FLAGS.rounds):
        for run in runs:
            run["seconds"].append(_epoch_seconds(run["model"], run["dataset"]))
            print(f"{run['widths']}: {run['seconds'][-1]:.1f} s", flush=True)
    validation = _validation_seconds(runs[0]["model"], split, base)
    reference = statistics.median(runs[0]["seconds"])
    lines = [
        f"\n## {base.dataset}, {base.model}, max_len {base.max_len}, batch {base.batch_size}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average {load_before:.2f} before the timed epochs, "
        f"{os.getloadavg()[0]:.2f} after.",
        "",
        "`python benchmarks/bucket_widths.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:] if not a.startswith("--output"))
        + "`",
        "",
        "| widths | compiled steps | targets / positions | warm-up epoch, s | "
        "epoch (steps only), s, each round | vs the first |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        seconds = ", ".join(f"{s:.1f}" for s in run["seconds"])
        ratio = statistics.median(run["seconds"]) / reference
        lines.append(
            f"| {','.join(map(str, run['widths']))} | {len(run['widths'])} | "
            f"{run['density']:.2f} | {run['warmup']:.0f} | {seconds} | {ratio:.2f}x |"
        )
    lines += [
        "",
        f"Validation, full ranking of {len(split.valid_targets):,} users, batches of "
        f"{base.eval_batch_size}: **{validation['bucketed']:.1f} s** with histories cut to "
        f"their length bucket in graphs traced per width (training.score_function), "
        f"{validation['eager']:.1f} s with the model called eagerly at full width "
        f"({validation['bucketed'] / validation['eager']:.2f}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    append_section(
        os.path.join(REPO, FLAGS.output),
        "Length buckets: padding and seconds per epoch",
        "benchmarks/bucket_widths.py",
        text,
    )


if __name__ == "__main__":
    app.run(main)
