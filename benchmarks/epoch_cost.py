"""Seconds per training epoch of the campaign's models, side by side in one process.

    python benchmarks/epoch_cost.py --data_dir=../shared/data --dataset=beauty \
        --models=fmlp,hybrid,hybrid-shared-block,linrec,sasrec --rounds=3

Each name is a model (``flags/<dataset>_<model>.flags``) or an ablation of the
accuracy campaign (its flagfile plus overrides, ``campaign_plan.ABLATIONS``), so
every model runs with the flags the campaign trains it with: the same bucketed
batches (``training.training_data``), loss, optimizer and schedule. Each model is
built and run through one untimed epoch (every width's step traced and compiled);
then ``--rounds`` rounds time one epoch of each model in turn: its training steps,
then the validation pass the trainer makes after every epoch (full ranking of every
user). ``--autotuning_too`` times each model again on the same batches with tf.data
autotuning on, which the trainer turns off (``data.pipeline.without_autotuning``).
Interleaving the models round by round spreads any drift of the machine over all
of them. Reported per model: encoder parameters, each round's seconds, the
median epoch and its ratio to the first model of ``--models``, with the load
average before and after. Run it alone on the machine (benchmarks/README.md): a
training on the other core changes the figures. Appends a section to ``--output``.
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

from campaign_plan import ABLATIONS, MODELS, SAME_AS_HYBRID, flagfile_config, run_plan  # noqa: E402
from results_page import append_section  # noqa: E402

flags.DEFINE_string(
    "data_dir", os.environ.get("HYBRID_TFRS_DATA_DIR"), "Folder with Beauty.txt and ml-1m/."
)
flags.DEFINE_string("dataset", "beauty", "Dataset: the flagfiles flags/<dataset>_<model>.flags.")
flags.DEFINE_list(
    "models",
    ["fmlp", "hybrid", "hybrid-shared-block", "linrec", "sasrec"],
    f"Models ({', '.join(MODELS)}) or campaign ablations; ratios are to the first.",
)
flags.DEFINE_integer("rounds", 3, "Timed epochs of each model, in turn.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "The runs' --seed (model initialisation, batch order).")
flags.DEFINE_integer(
    "max_batches", 0, "Time only this many batches an epoch (0: the whole epoch).", lower_bound=0
)
flags.DEFINE_boolean(
    "autotuning_too",
    False,
    "Also time each model on batches with tf.data autotuning on (the trainer turns it off; "
    "data.pipeline.without_autotuning says why).",
)
flags.DEFINE_list("override", [], "Extra trainer flags for every model, e.g. max_len=16.")
flags.DEFINE_string("output", "benchmarks/results/epoch_cost.md", "Results page (appended).")
FLAGS = flags.FLAGS


def planned_configs():
    """[(name, flagfile, overrides, TrainConfig)] in --models order."""
    unknown = [name for name in FLAGS.models if name not in MODELS and name not in ABLATIONS]
    if unknown:
        raise app.UsageError(
            f"--models: unknown {unknown}; use {list(MODELS)} or {list(ABLATIONS)}"
        )
    malformed = [item for item in FLAGS.override if "=" not in item]
    if malformed:
        raise app.UsageError(f"--override: {malformed} not name=value, e.g. max_len=16")
    extra = dict(item.split("=", 1) for item in FLAGS.override)
    models = [name for name in FLAGS.models if name in MODELS]
    ablations = [name for name in FLAGS.models if name in ABLATIONS]
    plan = {name: (flagfile, overrides) for _, name, flagfile, overrides, _ in run_plan(
        [FLAGS.dataset], models, ablations, [FLAGS.seed]
    )}  # fmt: skip
    configs = []
    for name in FLAGS.models:
        if name not in plan:  # an ablation the flagfile already is
            continue
        flagfile, overrides = plan[name]
        # The placeholder ("the hybrid's train minutes") does not change an epoch.
        overrides = {k: v for k, v in overrides.items() if v != SAME_AS_HYBRID}
        run_flags = {**overrides, **extra, "seed": FLAGS.seed}
        if FLAGS.data_dir:
            run_flags["data_dir"] = FLAGS.data_dir
        configs.append((name, flagfile, overrides, flagfile_config(flagfile, run_flags)))
    return configs


class TimedModel:
    """One model of the comparison: its batches, compiled model and validation pass."""

    def __init__(self, name, flagfile, overrides, config, data, split, autotuning=False):
        import keras
        import tensorflow as tf

        from hybrid_tfrs.training import build_model, compile_model, score_function, training_data

        self.name = f"{name} (autotuning on)" if autotuning else name
        self.flagfile, self.overrides, self.config = flagfile, overrides, config
        self.split = split
        self.dataset, steps, targets_per_batch = training_data(config, data, split)
        if autotuning:
            options = tf.data.Options()
            options.autotune.enabled = True
            self.dataset = self.dataset.with_options(options)
        if FLAGS.max_batches:
            self.dataset = self.dataset.take(FLAGS.max_batches)
            steps = min(steps, FLAGS.max_batches)
        self.steps = steps
        keras.utils.set_random_seed(config.seed)
        self.model = build_model(config, split.num_items, split.item_popularity, targets_per_batch)
        compile_model(self.model, config, steps)
        self.score_fn = score_function(self.model)  # its graphs traced once, as in training
        self.warmup = None
        self.train_seconds, self.validation_seconds = [], []

    def epoch(self):
        """(seconds of the training steps, seconds of the validation pass)."""
        from hybrid_tfrs.training import validate

        started = time.perf_counter()
        self.model.fit(self.dataset, epochs=1, shuffle=False, verbose=0)
        trained = time.perf_counter()
        validate(self.model, self.split, self.config, self.score_fn)
        return trained - started, time.perf_counter() - trained

    @property
    def epoch_seconds(self):
        """Median over the rounds of training steps plus validation."""
        rounds = zip(self.train_seconds, self.validation_seconds, strict=True)
        return statistics.median(t + v for t, v in rounds)


def markdown(models, split, started, load_before, load_after):
    reference = models[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    argv = [a for a in sys.argv[1:] if not a.startswith("--output")]
    lines = [
        f"\n## {FLAGS.dataset}, {cores} core{'s' if cores > 1 else ''}, {started}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"({cores} open to this process); load average {load_before:.2f} before the timed "
        f"rounds, {load_after:.2f} after. {len(split.valid_targets):,} users validated an epoch.",
        "",
        "`python benchmarks/epoch_cost.py " + " ".join(shlex.quote(a) for a in argv) + "`",
        "",
        "| model | flagfile + overrides | encoder parameters | batches | warm-up epoch, s | "
        "training steps, s, each round | validation, s, each round | epoch, s (median) | "
        f"vs {reference.name} |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for m in models:
        given = " ".join(f"--{k}={v}" for k, v in m.overrides.items())
        lines.append(
            f"| {m.name} | `{m.flagfile}`{' `' + given + '`' if given else ''} | "
            f"{m.model.encoder.count_params():,} | {m.steps} | {m.warmup:.0f} | "
            f"{', '.join(f'{s:.1f}' for s in m.train_seconds)} | "
            f"{', '.join(f'{s:.1f}' for s in m.validation_seconds)} | "
            f"{m.epoch_seconds:.1f} | {m.epoch_seconds / reference.epoch_seconds:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from hybrid_tfrs.training import load_split

    started = time.strftime("%Y-%m-%d %H:%M")

    configs = planned_configs()
    if not configs:
        raise app.UsageError("--models: nothing to time")
    splits = {}
    models = []
    for name, flagfile, overrides, config in configs:
        key = (config.dataset, config.data_dir, config.data_file, config.min_length, config.seed)
        if key not in splits:
            splits[key] = load_split(config)
        data, split = splits[key]
        for autotuning in (False, True) if FLAGS.autotuning_too else (False,):
            models.append(TimedModel(name, flagfile, overrides, config, data, split, autotuning))
    # Warm up only once every model is built: keras.utils.set_random_seed, called before
    # each build, makes the models built before it trace their steps again.
    for model in models:
        model.warmup = sum(model.epoch())
        print(f"{model.name}: warm-up epoch {model.warmup:.0f} s ({model.steps} batches)")
    load_before = os.getloadavg()[0]
    for round_number in range(1, FLAGS.rounds + 1):
        for model in models:
            trained, validated = model.epoch()
            model.train_seconds.append(trained)
            model.validation_seconds.append(validated)
            print(
                f"round {round_number}/{FLAGS.rounds} {model.name}: "
                f"{trained:.1f} s training, {validated:.1f} s validation",
                flush=True,
            )
    text = markdown(models, models[0].split, started, load_before, os.getloadavg()[0])
    print(text)
    append_section(
        os.path.join(REPO, FLAGS.output),
        "Seconds per epoch, side by side",
        "benchmarks/epoch_cost.py",
        text,
    )


if __name__ == "__main__":
    app.run(main)
