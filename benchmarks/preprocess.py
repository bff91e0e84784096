"""hybrid-tfrs-preprocess at scale, and training from its shards against training from memory.

    python benchmarks/preprocess.py --events=10000000 --users=1000000 --items=100000
    python benchmarks/preprocess.py --events=1000000 --users=100000 --items=10000 \\
        --train_steps=40 --train_rounds=5  # writes results/preprocess.md

1. Generates a CSV log (hybrid_tfrs.data.event_log: Zipf items, tied times).
2. Runs the Beam pipeline (hybrid_tfrs.preprocess.pipeline, 8 shards as the command
   writes) on the DirectRunner in a child process under /usr/bin/time -v: wall
   minutes, peak resident memory, and the time of each stage from Beam's own
   per-transform execution-time counters (the rest is the runner: grouping,
   encoding between stages, side inputs).
3. With --train_steps: a hybrid model's seconds per training step on the same
   users, batches from memory (pipeline.training_dataset on read_split's users)
   against batches streamed from the shards (--prepared_dir), alternating for
   --train_rounds rounds; of each step, the time spent waiting for the next batch
   (zero when the input pipeline keeps ahead); and both input pipelines alone
   (batches per second, no model).
"""

import collections
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_integer("events", 1_000_000, "Events of the generated log.")
flags.DEFINE_integer("users", 100_000, "Users of the generated log.")
flags.DEFINE_integer("items", 10_000, "Items of the generated log.")
flags.DEFINE_string("work_dir", "/tmp/preprocess_bench", "Where the log and shards go.")
flags.DEFINE_integer("train_steps", 0, "Training steps timed per input path and round (0: skip).")
flags.DEFINE_integer("train_rounds", 3, "Rounds of memory then streamed steps, alternating.")
flags.DEFINE_string("output", "benchmarks/results/preprocess.md", "Results page (appended).")
flags.DEFINE_string("stage", "all", "all, or pipeline (the child process).")
FLAGS = flags.FLAGS
WARMUP_STEPS = 20

# Top-level transform labels of build_pipeline -> the stage they belong to.
STAGES = {
    "read and parse": ("Match", "MatchFiles", "Read", "Parse"),
    "item counts and vocabulary": (
        "Items",
        "ItemCounts",
        "RareItems",
        "DropRareItems",
        "KeptItems",
        "AllCounts",
        "Vocabulary",
        "Index",
        "VocabularyText",
    ),
    "group by user, order, split, encode": (
        "GroupByUser",
        "Order",
        "Split",
        "KeptUsers",
        "ShortUsers",
        "Examples",
    ),
    "popularity and stats": (
        "TrainItems",
        "TrainCounts",
        "AllTrainCounts",
        "Popularity",
        "Lengths",
        "Reasons",
        "CountReasons",
        "ReasonDict",
        "AllStats",
        "StatsDict",
        "StatsJson",
        "NumItems",
        "Interactions",
        "KeyInteractions",
        "ShortLengths",
        "ShortEvents",
        "KeyShortEvents",
        "CountKept",
        "KeyKept",
        *(
            f"{kind}{name}"
            for kind in ("Count", "Key")
            for name in ("Rows", "Users", "Short", "Dead")
        ),
    ),
    "write files": (
        "WriteUsers",
        "WriteVocabulary",
        "WritePopularity",
        "WriteStats",
        "WriteDeadLetter",
        "DeadLetterJson",
    ),
}


def _log_path():
    return os.path.join(FLAGS.work_dir, f"log-{FLAGS.events}.csv")


def _prepared_path():
    return os.path.join(FLAGS.work_dir, f"prepared-{FLAGS.events}")


def _pipeline_child():
    """Runs the pipeline in this process; prints a JSON line of seconds per stage."""
    import apache_beam as beam

    from hybrid_tfrs.preprocess.pipeline import build_pipeline
    from hybrid_tfrs.preprocess.rows import Columns

    started = time.perf_counter()
    pipeline = beam.Pipeline()
    columns = Columns("user_id", "item_id", "timestamp")
    build_pipeline(pipeline, [_log_path()], columns, _prepared_path(), num_shards=8)
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.perf_counter() - started
    stage_of = {label: stage for stage, labels in STAGES.items() for label in labels}
    seconds = collections.Counter()
    for counter in result.monitoring_metrics().query()["counters"]:
        if counter.key.metric.name.endswith("ptransform_execution_time:total_msecs:v1"):
            top = counter.key.step.split("/")[0]
            seconds[stage_of.get(top, "runner (grouping, side inputs, between stages)")] += (
                counter.committed / 1000.0
            )
    print(json.dumps({"wall_seconds": wall, "stage_seconds": dict(seconds)}))


def _run_pipeline():
    shutil.rmtree(_prepared_path(), ignore_errors=True)
    command = [
        sys.executable,
        __file__,
        "--stage=pipeline",
        f"--events={FLAGS.events}",
        f"--work_dir={FLAGS.work_dir}",
    ]
    timer = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    result = subprocess.run(
        timer + command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    report["peak_rss_gb"] = int(peak.group(1)) / 2**20 if peak else None
    return report


def _timed_steps(model, iterator, steps):
    """Seconds per step of ``train_on_batch``, and of it the seconds spent waiting for a batch."""
    waiting = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        inputs, targets = next(iterator)
        waiting += time.perf_counter() - asked
        model.train_on_batch(inputs, targets)
    return (time.perf_counter() - started) / steps, waiting / steps


def _batches_per_second(dataset, steps):
    started = time.perf_counter()
    for _ in dataset.take(steps):
        pass
    return steps / (time.perf_counter() - started)


def _train_comparison(steps, rounds):
    """Per input path: seconds per step and input wait per step in each round (see module doc).

    One model (one traced step) trains on both inputs, alternating memory and
    streamed ``rounds`` times, each path on its own long-lived iterator (as in an
    epoch of ``fit``); ``WARMUP_STEPS`` untimed steps first fill the shuffle
    buffers and trace the step.
    """
    import keras

    from hybrid_tfrs.config import TrainConfig
    from hybrid_tfrs.data.pipeline import training_dataset
    from hybrid_tfrs.data.prepared import load_prepared
    from hybrid_tfrs.data.prepared_pipeline import (
        read_split,
        streamed_split,
        streamed_training_dataset,
    )
    from hybrid_tfrs.training import build_model, compile_model

    # Each batch's mean: a step takes the same time under either loss weighting, and this
    # one needs no count of the targets.
    config = TrainConfig(dataset="own", prepared_dir=_prepared_path(), loss_normalization="batch")
    prepared = load_prepared(_prepared_path())
    split = read_split(prepared)
    lengths = streamed_split(prepared).train_lengths

    def datasets(bucket_by_length):
        settings = dict(seed=0, bucket_by_length=bucket_by_length)
        memory = training_dataset(split.train, config.max_len, config.batch_size, **settings)
        streamed, _ = streamed_training_dataset(
            prepared, lengths, config.max_len, config.batch_size, **settings
        )
        return {"memory": memory.repeat(), "streamed": streamed.repeat()}

    result = collections.defaultdict(list)
    for name, dataset in datasets(bucket_by_length=True).items():
        result[f"{name}_batches_per_second"] = _batches_per_second(dataset, steps * 5)
    # Fixed-width batches (no length buckets): one traced step, so only the input differs.
    keras.utils.set_random_seed(0)
    model = build_model(config, split.num_items, split.item_popularity)
    compile_model(model, config)
    iterators = {name: iter(dataset) for name, dataset in datasets(False).items()}
    for iterator in iterators.values():
        _timed_steps(model, iterator, WARMUP_STEPS)
    for _ in range(rounds):
        for name, iterator in iterators.items():
            seconds, waiting = _timed_steps(model, iterator, steps)
            result[f"{name}_seconds_per_step"].append(seconds)
            result[f"{name}_wait_per_step"].append(waiting)
    return result


def _training_lines(training):
    """The training section of the results page."""
    median = {
        name: statistics.median(training[f"{name}_seconds_per_step"])
        for name in ("memory", "streamed")
    }
    lines = [
        "",
        f"Training (hybrid, default flags but fixed-width batches; one model trained "
        f"{FLAGS.train_steps} steps a round from each input, alternating, {FLAGS.train_rounds} "
        f"rounds after {WARMUP_STEPS} warm-up steps each; load average "
        f"{os.getloadavg()[0]:.2f}):",
        "",
        "| input | seconds per step, each round | of it waiting for the batch, ms | "
        "input pipeline alone, batches/s (length buckets, as trained) |",
        "|---|---|---|---|",
    ]
    for name, label in (("memory", "from memory"), ("streamed", "streamed from shards")):
        rounds = ", ".join(f"{seconds:.4f}" for seconds in training[f"{name}_seconds_per_step"])
        waits = ", ".join(f"{seconds * 1000:.1f}" for seconds in training[f"{name}_wait_per_step"])
        batches = training[f"{name}_batches_per_second"]
        lines.append(f"| {label} | {rounds} | {waits} | {batches:.0f} |")
    ratios = [
        streamed / memory
        for memory, streamed in zip(
            training["memory_seconds_per_step"], training["streamed_seconds_per_step"]
        )
    ]
    lines += [
        "",
        f"Streamed / memory seconds per step: {median['streamed'] / median['memory']:.3f} "
        f"(medians); by round {', '.join(f'{ratio:.3f}' for ratio in ratios)}, "
        f"mean {statistics.mean(ratios):.3f}"
        + (f" ± {statistics.stdev(ratios):.3f} (sd)." if len(ratios) > 1 else "."),
    ]
    return lines


def main(argv):
    if FLAGS.stage == "pipeline":
        _pipeline_child()
        return
    from hybrid_tfrs.data.event_log import generate_events, write_csv

    os.makedirs(FLAGS.work_dir, exist_ok=True)
    started = time.perf_counter()
    if not os.path.exists(_log_path()):
        write_csv(_log_path(), *generate_events(FLAGS.users, FLAGS.items, FLAGS.events))
    generate_seconds = time.perf_counter() - started
    report = _run_pipeline()
    with open(os.path.join(_prepared_path(), "stats.json")) as f:
        stats = json.load(f)
    lines = [
        f"\n## {FLAGS.events:,} events, {FLAGS.users:,} users, {FLAGS.items:,} items",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average before {os.getloadavg()[0]:.2f}; log written in {generate_seconds:.0f} s "
        f"({os.path.getsize(_log_path()) / 2**20:.0f} MiB).",
        "",
        f"`python benchmarks/preprocess.py --events={FLAGS.events} --users={FLAGS.users} "
        f"--items={FLAGS.items}"
        + (
            f" --train_steps={FLAGS.train_steps} --train_rounds={FLAGS.train_rounds}`"
            if FLAGS.train_steps
            else "`"
        ),
        "",
        f"- Pipeline (DirectRunner, one process): **{report['wall_seconds'] / 60:.1f} minutes**, "
        f"peak memory **{report['peak_rss_gb']:.2f} GB** (max RSS, /usr/bin/time -v).",
        f"- Output: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions; dropped: {json.dumps(stats['dropped'])}.",
        "",
        "| stage | seconds (Beam execution-time counters) | share of wall |",
        "|---|---|---|",
    ]
    for stage, seconds in sorted(report["stage_seconds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {stage} | {seconds:.0f} | {seconds / report['wall_seconds']:.0%} |")
    counted = sum(report["stage_seconds"].values())
    lines.append(
        f"| not attributed (runner start, shuffles) | "
        f"{report['wall_seconds'] - counted:.0f} | "
        f"{1 - counted / report['wall_seconds']:.0%} |"
    )
    if FLAGS.train_steps:
        lines += _training_lines(_train_comparison(FLAGS.train_steps, FLAGS.train_rounds))
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(REPO, FLAGS.output), "a") as f:
        f.write(text)


if __name__ == "__main__":
    app.run(main)
