"""Accuracy campaign: the four models (and the hybrid's ablations) on real data.

    python benchmarks/accuracy.py --data_dir=../shared/data                  # everything
    python benchmarks/accuracy.py --data_dir=../shared/data --datasets=beauty \
        --models=hybrid,fmlp --seeds=0,1,2 --ablations=

Each run is ``trainers/train.py --flagfile=flags/<dataset>_<model>.flags`` in its
own process (its log in ``<runs_dir>/<dataset>/<name>/seed<s>/train.log``); a run
whose folder already holds a finished training is evaluated again, not retrained.
``--records_dir=DIR`` keeps each finished run's metrics.json and test ranks in
``DIR/<dataset>/<name>/seed<s>/`` (small enough to commit); a run found there
and not in ``--runs_dir`` counts as finished, so tables and paired tests outlive
the run folders.
``--cores=0,1`` runs two at a time, each pinned to its own core.
Ablations are the hybrid's flagfile plus one change, capacity-matched baselines a
baseline's flagfile with more layers (see ``ABLATIONS``). Each is parsed with the
trainer's own flags before any run starts: one the flagfile already is gets skipped,
one with a flag or value the trainer refuses stops the campaign there.

Writes ``<output>.json``: a list of rows ``{"dataset", "model", "variant",
"protocol", "split": "test", "seeds", "metrics": {metric: mean}, "std": {metric:
std}, "flagfile", "overrides", "train_minutes", ...}`` (one per dataset, model
and protocol), ``<output>.md`` (tables beside the published numbers, and paired
tests of the hybrid against each other model from the runs' test_ranks.npz,
benchmarks/paired.py), ``<output>_paired.json`` (those tests) and, with
``--plots``, PNGs next to them.
"""

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from campaign_plan import (
    ABLATIONS,
    BATCH_LOSS,
    CAPACITY_MATCHED_BASELINES,
    CAPACITY_MATCHED_HYBRIDS,
    MATCHED_HYBRIDS,
    MODELS,
    REPO,
    SAME_AS_HYBRID,
    flagfile_config,
    run_plan,
)

from hybrid_tfrs.config import TrainConfig

HEADLINE = ("HR@10", "NDCG@10", "MRR")
# docs/design.md#published-numbers, each under the protocol it was measured with.
PUBLISHED = [
    ("beauty", "uniform-99", "FMLP-Rec (authors' log)", {"HR@10": 0.4935, "NDCG@10": 0.3317,
                                                        "MRR": 0.2985}),
    ("beauty", "full-unseen", "BSARec (authors' log)", {"HR@10": 0.1008, "NDCG@10": 0.0611}),
    ("beauty", "full-unseen", "SASRec+ sampled softmax (transformer_benchmark)",
     {"HR@10": 0.0921, "NDCG@10": 0.0531}),
    ("beauty", "full-unseen", "eSASRec (transformer_benchmark)",
     {"HR@10": 0.0928, "NDCG@10": 0.0523}),
    ("ml-1m", "full", "RecGRELA (RecBole)", {"HR@10": 0.3311, "NDCG@10": 0.1959,
                                             "MRR@10": 0.1545}),
    ("ml-1m", "full", "LinRec (SASRec backbone), run by RecGRELA (RecBole)",
     {"HR@10": 0.3109, "NDCG@10": 0.1837, "MRR@10": 0.1448}),
    ("ml-1m", "full-unseen", "LRURec (its table)", {"HR@10": 0.3264, "NDCG@10": 0.1930}),
    ("ml-1m", "full-unseen", "SASRec, in LRURec's table", {"HR@10": 0.3181, "NDCG@10": 0.1902}),
    ("ml-1m", "full-unseen", "FMLP-Rec, in LRURec's table", {"HR@10": 0.2907, "NDCG@10": 0.1530}),
    ("ml-1m", "full-unseen", "SASRec+ full CE (Klenitskiy & Vasilev)",
     {"HR@10": 0.3152, "NDCG@10": 0.1821}),
]  # fmt: skip
# The campaign's targets for the hybrid (issue 12; mean of seeds): (dataset, protocol, metric,
# at least).
TARGETS = [
    ("ml-1m", "full", "NDCG@10", 0.19),
    ("ml-1m", "full-unseen", "NDCG@10", 0.195),
    ("beauty", "full-unseen", "NDCG@10", 0.058),
]

flags.DEFINE_string(
    "data_dir", os.environ.get("HYBRID_TFRS_DATA_DIR"), "Folder with Beauty.txt and ml-1m/."
)
flags.DEFINE_list("datasets", ["beauty", "ml-1m"], "Datasets (flags/<dataset>_<model>.flags).")
flags.DEFINE_list("models", list(MODELS), "Models, each from its own flagfile.")
flags.DEFINE_list(
    "ablations",
    [
        "hybrid-filter-trunk-fixed-alpha",
        "hybrid-filter-trunk-statistics-gate",
        "hybrid-last-position",
    ],
    f"Hybrid ablations and capacity-matched baselines among {', '.join(ABLATIONS)}.",
)
flags.DEFINE_list("seeds", ["0"], "Seeds; the tables give the mean and standard deviation.")
flags.DEFINE_list("override", [], "Extra flags for every run, e.g. epochs=2 (for smoke runs).")
flags.DEFINE_string("runs_dir", "runs/accuracy", "Where the runs' folders go.")
flags.DEFINE_string("output", "benchmarks/results/accuracy", "Output path without extension.")
flags.DEFINE_boolean("plots", True, "Also draw the PNG plots (needs matplotlib).")
flags.DEFINE_boolean("train", True, "False: only collect runs that already finished.")
flags.DEFINE_string(
    "records_dir",
    "",
    "Where to keep each finished run's record: its metrics.json and test ranks, a few hundred "
    "KB (empty: nowhere). A run whose folder is gone but whose record is here counts as "
    "finished, so results outlive the run folders and their checkpoints, and can be committed.",
)
flags.DEFINE_list(
    "cores",
    [],
    "CPU cores to pin the runs to, one run a core at a time (0,1: two runs at once, each on "
    "its own core); empty: one run after another, unpinned.",
)
FLAGS = flags.FLAGS


class RunFailed(Exception):
    """A training exited non-zero; the message names its last log line and the log."""


def extra_flags():
    """--override as a dict of flag name -> value."""
    return dict(o.split("=", 1) for o in FLAGS.override)


def train_command(flagfile, overrides, seed, output_dir, data_dir):
    extra = {**overrides, **extra_flags()}
    return [
        sys.executable,
        "trainers/train.py",
        f"--flagfile={flagfile}",
        f"--data_dir={data_dir}",
        f"--seed={seed}",
        f"--output_dir={output_dir}",
        *(f"--{key}={value}" for key, value in extra.items()),
    ]


def run_one(command, output_dir, core=None):
    """Runs (or re-evaluates) one training, pinned to ``core`` if given; returns its
    metrics.json dict. Raises RunFailed if the training exits non-zero."""
    os.makedirs(output_dir, exist_ok=True)
    log_path = os.path.join(output_dir, "train.log")
    started = time.perf_counter()
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    with open(log_path, "a", encoding="utf-8") as log:
        where = "" if core is None else f"[core {core}] "
        log.write(f"\n$ {where}{' '.join(command[1:])}\n")
        log.flush()
        result = subprocess.run(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin
        )
    if result.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            last_line = ([line.strip() for line in log if line.strip()] or [""])[-1]
        raise RunFailed(f"run failed (exit {result.returncode}): {last_line}\nfull log: {log_path}")
    metrics = read_metrics(output_dir)
    print(
        f"  {output_dir} done in {(time.perf_counter() - started) / 60:.1f} min: test full "
        f"NDCG@10 {metrics['test']['full']['NDCG@10']:.4f}, best epoch {metrics['best_epoch']}",
        flush=True,
    )
    return metrics


def run_all(jobs, cores):
    """Runs every job, one a core at a time.

    Args:
      jobs: [PlannedRun], in plan order; a job needing the results of others
        (``needs_hybrid``) starts after all the others have finished.
      cores: CPU cores to pin to, [] for one job after another, unpinned.

    Returns:
      [result] in the order of ``jobs``. After a RunFailed no new job starts;
      the ones running finish, then it is raised.
    """
    import concurrent.futures
    import queue
    import threading

    if not cores:
        return [job(None) for job in jobs]
    free = queue.Queue()
    for core in cores:
        free.put(core)
    failed = threading.Event()

    def pinned(job):
        core = free.get()
        try:
            if failed.is_set():  # an earlier run failed: start nothing new
                return None
            return job(core)
        except RunFailed:
            failed.set()
            raise
        finally:
            free.put(core)

    results = [None] * len(jobs)
    phases = [[i for i, job in enumerate(jobs) if not job.needs_hybrid]]
    phases.append([i for i, job in enumerate(jobs) if job.needs_hybrid])
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cores)) as pool:
        for phase in phases:
            futures = {pool.submit(pinned, jobs[i]): i for i in phase}
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise future.exception()
                results[futures[future]] = future.result()
    return results


def check_cores(cores):
    """--cores as ints, each once and among the cores this process may use."""
    try:
        wanted = [int(core) for core in cores]
    except ValueError:
        raise app.UsageError(f"--cores: expected integers, got {','.join(cores)}") from None
    usable = sorted(os.sched_getaffinity(0))
    unknown = [core for core in wanted if core not in usable]
    if unknown or len(set(wanted)) != len(wanted):
        raise app.UsageError(
            f"--cores: {','.join(cores)} must name distinct cores among {usable} (this machine's)"
        )
    return wanted


def hybrid_minutes(dataset, seed):
    """Training minutes of the finished hybrid run of this dataset and seed (its folder or
    its record)."""
    output_dir, record_dir = run_folders(dataset, "hybrid", seed)
    folder = finished_dir(output_dir, record_dir)
    if folder is None:
        path = os.path.join(output_dir, "metrics.json")
        raise app.UsageError(f"{path} not found: the ablation's time budget is the hybrid's")
    return read_metrics(folder)["train_minutes"]


def resolve(overrides, dataset, seed):
    """Overrides with the placeholder "same as hybrid" filled in."""
    resolved = dict(overrides)
    if resolved.get("max_train_minutes") == SAME_AS_HYBRID:
        resolved["max_train_minutes"] = f"{hybrid_minutes(dataset, seed):.2f}"
    return resolved


def epoch_minutes(metrics):
    """The run's median epoch time in minutes (a paused epoch's wall clock counts the pause)."""
    seconds = metrics.get("median_epoch_seconds")
    if seconds is None:  # a run finished before median_epoch_seconds was recorded
        seconds = float(np.median([row["epoch_seconds"] for row in metrics["history"]]))
    return seconds / 60.0


def time_to_best_minutes(metrics):
    """Training minutes until the best validation NDCG@10: best epoch x median epoch time."""
    return metrics["best_epoch"] * epoch_minutes(metrics)


def aggregate(dataset, name, flagfile, overrides, runs):
    """Rows (one per protocol) from the metrics.json of one model's seeds."""
    seeds = [run["config"]["seed"] for run in runs]
    rows = []
    for protocol in runs[0]["test"]:
        values = {m: [run["test"][protocol][m] for run in runs] for m in runs[0]["test"][protocol]}
        rows.append(
            {
                "dataset": dataset,
                "model": runs[0]["model"],
                "variant": name,
                "protocol": protocol,
                "split": "test",
                "seeds": seeds,
                "metrics": {m: float(np.mean(v)) for m, v in values.items()},
                "std": {
                    m: float(np.std(v, ddof=1)) if len(v) > 1 else None for m, v in values.items()
                },
                "flagfile": flagfile,
                "overrides": {**overrides, **extra_flags()},
                "train_minutes": float(np.mean([run["train_minutes"] for run in runs])),
                "minutes_to_best": float(np.mean([time_to_best_minutes(run) for run in runs])),
                "minutes_per_epoch": float(np.mean([epoch_minutes(run) for run in runs])),
                "best_epoch": [run["best_epoch"] for run in runs],
                "epochs_trained": [run["epochs_trained"] for run in runs],
                "stopped_by": [run.get("stopped_by", "-") for run in runs],
                "parameters": runs[0]["parameters"],
                "test_alpha": [run["test_alpha"] for run in runs],
            }
        )
    return rows


def paired_tests(run_dirs):
    """Paired tests of the hybrid against every other variant of its dataset (benchmarks/paired.py).

    A baseline trained another way (``fmlp-target-loss``: a model, a dash, the
    change) is also tested against the hybrid trained that way
    (``hybrid-target-loss``) when both are there: the same recipe on both sides.

    Args:
      run_dirs: {(dataset, variant): [(seed, run folder)]}.

    Returns:
      (results, notes): results, one paired.compare result per dataset, pair
      and protocol among ``paired.PROTOCOLS`` that all runs have, with
      "dataset", "name" (the hybrid side), "baseline" (the variant) and "seeds";
      notes, {dataset: [line]} naming the pairs left out for want of
      test_ranks.npz files.
    """
    from paired import PROTOCOLS, compare  # benchmarks/paired.py

    from hybrid_tfrs.run_dir import TEST_RANKS_FILE
    from hybrid_tfrs.significance import read_ranks

    results, notes = [], {}
    for (dataset, name), runs in run_dirs.items():
        for reference in _hybrid_sides(name):
            hybrid = run_dirs.get((dataset, reference))
            if hybrid is None:
                continue
            paths = [[os.path.join(d, TEST_RANKS_FILE) for _, d in side] for side in (hybrid, runs)]
            missing = [path for path in paths[0] + paths[1] if not os.path.exists(path)]
            if missing:
                notes.setdefault(dataset, []).append(
                    f"{reference} against {name}: no paired test, {', '.join(missing)} not found "
                    "(hybrid-tfrs-evaluate --run_dir=DIR --splits=test --write_ranks writes it)"
                )
                continue
            mine, theirs = ([read_ranks(path) for path in side] for side in paths)
            protocols = [p for p in PROTOCOLS if all(p in r.ranks for r in mine + theirs)]
            seeds = " / ".join(",".join(str(seed) for seed, _ in side) for side in (hybrid, runs))
            for result in compare(mine, theirs, protocols):
                results.append(
                    {"dataset": dataset, "name": reference, "baseline": name, "seeds": seeds}
                    | result
                )
    return results, notes


def _hybrid_sides(name):
    """The hybrid variants ``name`` is tested against: the hybrid; for a baseline
    trained another way (``fmlp-target-loss``) the hybrid trained that way too; for a
    capacity-matched baseline the hybrids built to match it as well; for a baseline of
    another size the hybrids of its size (``MATCHED_HYBRIDS``); and a variant
    trained with each batch's mean only against the hybrids trained so (the
    flagfiles' hybrid weighs every target alike: that margin would be the loss's)."""
    if name == "hybrid":
        return []
    model, _, change = name.partition("-")
    batch_mean = name.endswith(BATCH_LOSS) and name != f"hybrid{BATCH_LOSS}"
    sides = [] if batch_mean else ["hybrid"]
    if model in MODELS and model != "hybrid" and change:
        sides.append(f"hybrid-{change}")
    if name in CAPACITY_MATCHED_BASELINES:
        sides.extend(CAPACITY_MATCHED_HYBRIDS)
    sides.extend(MATCHED_HYBRIDS.get(name, ()))
    if batch_mean:
        sides.append(f"hybrid{BATCH_LOSS}")
    return list(dict.fromkeys(sides))  # in order, once each


def _cell(row, metric):
    mean, std = row["metrics"].get(metric), row["std"].get(metric)
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def markdown(rows, commands, machine, paired=(), paired_notes=None, plots=()):
    """The results page: per dataset, protocol tables, paired tests, published numbers,
    targets; then the plots (file names beside the page) and the commands."""
    paired_notes = paired_notes or {}
    lines = ["# Accuracy (test split, leave-one-out)", "", f"Machine: {machine}.", ""]
    lines += [
        "Protocols (docs/design.md#protocols, `hybrid_tfrs/evaluation.py`): `full` ranks the",
        "target among all items (RecBole's full sort, used by RecGRELA and LinRec on ML-1M);",
        "`full-unseen` among the items not already in the user's history (the S3-Rec code's",
        "full sort and LRURec, SASRec+: FMLP-Rec and BSARec on Beauty, LRURec's and",
        "SASRec+'s ML-1M tables); `uniform-99` and `pop-100` against 99 uniform / 100",
        "popularity-drawn unseen items. Ties count against the model. Mean ± standard",
        "deviation over the seeds listed; one seed gives no deviation. `min/epoch` is each",
        "run's median epoch (the wall clock of a paused or crowded epoch counts the pause),",
        "`min to best` the best epoch times it; `stopped by` says whether patience, the",
        "`--epochs` cap or a `--max_train_minutes` budget ended each seed's run.",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ours = [r for r in rows if r["dataset"] == dataset]
        protocols = list(dict.fromkeys(r["protocol"] for r in ours))
        lines += [f"## {dataset}", ""]
        header = ["model", "seeds"] + [f"{p} {m}" for p in protocols for m in HEADLINE]
        header += ["min/epoch", "min to best", "best epoch", "epochs", "stopped by"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for variant in dict.fromkeys(r["variant"] for r in ours):
            by_protocol = {r["protocol"]: r for r in ours if r["variant"] == variant}
            first = next(iter(by_protocol.values()))
            cells = [variant, ",".join(map(str, first["seeds"]))]
            cells += [_cell(by_protocol[p], m) for p in protocols for m in HEADLINE]
            cells += [
                f"{first['minutes_per_epoch']:.2f}",
                f"{first['minutes_to_best']:.1f}",
                ",".join(map(str, first["best_epoch"])),
                ",".join(map(str, first["epochs_trained"])),
                ",".join(first.get("stopped_by", ["-"])),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += _paired_section(
            [r for r in paired if r["dataset"] == dataset], paired_notes.get(dataset, [])
        )
        published = [p for p in PUBLISHED if p[0] == dataset]
        if published:
            lines += [
                "Published (docs/design.md#published-numbers) beside our hybrid, same protocol:",
                "",
            ]
            lines += [
                "| source | protocol | metric | published | our hybrid |",
                "|---|---|---|---|---|",
            ]
            hybrid = {r["protocol"]: r for r in ours if r["variant"] == "hybrid"}
            for _, protocol, source, numbers in published:
                for metric, value in numbers.items():
                    mine = _cell(hybrid[protocol], metric) if protocol in hybrid else "-"
                    lines.append(f"| {source} | {protocol} | {metric} | {value:.4f} | {mine} |")
            lines.append("")
        targets = [t for t in TARGETS if t[0] == dataset]
        hybrid = {r["protocol"]: r for r in ours if r["variant"] == "hybrid"}
        if targets and hybrid:
            lines += ["Targets of the campaign (issue 12) for the hybrid, mean of its seeds:", ""]
            lines += ["| protocol | metric | target | ours | met |", "|---|---|---|---|---|"]
            for _, protocol, metric, goal in targets:
                if protocol not in hybrid:
                    continue
                value = hybrid[protocol]["metrics"][metric]
                met = "yes" if value >= goal else f"no ({value - goal:+.4f})"
                lines.append(f"| {protocol} | {metric} | {goal} | {value:.4f} | {met} |")
            lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name[:-4].replace('_', ' ')}]({name})" for name in plots] + [""]
    lines += ["## Commands", "", "```"] + commands + ["```", ""]
    return "\n".join(lines)


def _paired_section(results, notes):
    """Markdown lines: one dataset's paired-test table, how to read it, the tests left out."""
    from paired import table  # benchmarks/paired.py

    missing = [f"- {note}" for note in notes] + ([""] if notes else [])
    if not results:
        return missing
    first = results[0]
    return [
        "Paired test of the hybrid against each model (and of a baseline trained another "
        "way, e.g. `fmlp-target-loss` or `hybrid-fixed-alpha-batch-loss`, against the hybrid "
        f"trained the same way): test {first['metric']} per user, "
        f"the same {first['users']:,} test users, under each protocol named; each model's "
        "per-user value is averaged over its seeds (runs column: hybrid / other) before the "
        f"test; margin = hybrid minus the other; 95% interval and p-value from "
        f"{first['num_bootstrap']:,} bootstrap resamples of the users; Wilcoxon signed-rank "
        "on the users where the two differ. These two ask whether the models differ on these "
        "users with seed noise averaged out; p (seeds, Welch) asks whether another seed would "
        "show the margin: Welch's t-test on each run's own mean, where both sides have two "
        "seeds or more (weak with so few). Two-sided, not corrected for multiple comparisons.",
        "",
        *table(results, "hybrid", "other"),
        "",
        *missing,
    ]


def machine_name():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, CPU only"


@dataclasses.dataclass
class PlannedRun:
    """One entry of the plan; called with a core (or None), it trains (or, with
    --notrain, reads) the run and keeps its record (--records_dir): (command,
    metrics.json dict, the folder holding them and the test ranks), or None if
    not finished. A run with a record but no run folder is read from the record."""

    number: int
    total: int
    dataset: str
    name: str
    flagfile: str
    overrides: dict
    seed: int

    @property
    def output_dir(self):
        return run_folders(self.dataset, self.name, self.seed)[0]

    @property
    def needs_hybrid(self):
        """Whether its flags come from the finished hybrid run ("same as hybrid")."""
        return SAME_AS_HYBRID in self.overrides.values()

    @property
    def record_dir(self):
        """Its folder under --records_dir (None without one)."""
        return run_folders(self.dataset, self.name, self.seed)[1]

    def __call__(self, core):
        where = "" if core is None else f" on core {core}"
        print(
            f"[{self.number}/{self.total}] {self.dataset} {self.name} seed {self.seed}{where}",
            flush=True,
        )
        resolved = resolve(self.overrides, self.dataset, self.seed)
        command = train_command(self.flagfile, resolved, self.seed, self.output_dir, FLAGS.data_dir)
        record = self.record_dir
        planned = {**resolved, **extra_flags(), "seed": self.seed}
        if record is not None and finished_dir(self.output_dir, record) == record:
            metrics = read_metrics(record)
            stale = stale_settings(metrics, self.flagfile, planned)
            if not stale:
                print(f"  read from its record, {record} (no run folder)", flush=True)
                return command, metrics, record
            print(f"  not used: {record} was trained with {stale}", flush=True)
            if not FLAGS.train:
                return None
        if FLAGS.train:
            metrics = run_one(command, self.output_dir, core)
        elif finished_dir(self.output_dir) is None:
            missing = os.path.join(self.output_dir, "metrics.json")
            print(f"  skipped: {missing} not found", flush=True)
            return None
        else:
            metrics = read_metrics(self.output_dir)
            stale = stale_settings(metrics, self.flagfile, planned)
            if stale:
                print(f"  not used: {self.output_dir} was trained with {stale}", flush=True)
                return None
        if record is not None:
            keep_record(self.output_dir, record)
        return command, metrics, self.output_dir


def stale_settings(metrics, flagfile, overrides):
    """How a finished run (its metrics.json) differs from the planned one, as
    "--flag=its value (the plan: value)" joined by commas; "" when it is the planned run.
    A flagfile changed since the run was trained makes its record stale, not silently mixed in.
    """
    planned = flagfile_config(flagfile, overrides)
    try:
        trained = TrainConfig.from_json(metrics["config"])
    except (KeyError, TypeError, ValueError) as error:
        return f"settings this version cannot read ({error})"
    return ", ".join(
        f"--{name}={old!r} (the plan: {new!r})"
        for name, (old, new) in planned.differences(trained).items()
    )


def run_folders(dataset, name, seed):
    """(its folder under --runs_dir, its record's under --records_dir or None)."""
    run = os.path.join(dataset, name, f"seed{seed}")
    record = os.path.join(FLAGS.records_dir, run) if FLAGS.records_dir else None
    return os.path.join(FLAGS.runs_dir, run), record


def finished_dir(*folders):
    """The first of ``folders`` (None ones skipped) holding a metrics.json, else None."""
    for folder in folders:
        if folder and os.path.exists(os.path.join(folder, "metrics.json")):
            return folder
    return None


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
        return json.load(handle)


def keep_record(run_folder, record_folder):
    """Copies a finished run's test ranks (compressed) and metrics.json into its record
    folder; metrics.json goes last, so a record that has it is whole. A record whose
    metrics.json is the run's already is left as it is."""
    import filecmp

    from hybrid_tfrs.run_dir import TEST_RANKS_FILE
    from hybrid_tfrs.significance import read_ranks, write_ranks

    metrics_path = os.path.join(run_folder, "metrics.json")
    kept_metrics = os.path.join(record_folder, "metrics.json")
    if os.path.exists(kept_metrics) and filecmp.cmp(metrics_path, kept_metrics, shallow=False):
        return
    os.makedirs(record_folder, exist_ok=True)
    ranks_path = os.path.join(run_folder, TEST_RANKS_FILE)
    if os.path.exists(ranks_path):
        ranks = read_ranks(ranks_path)
        write_ranks(
            os.path.join(record_folder, TEST_RANKS_FILE), ranks.ranks, ranks.user_ids, ranks.split
        )
    temporary = os.path.join(record_folder, "metrics.json.tmp")
    shutil.copyfile(metrics_path, temporary)
    os.replace(temporary, kept_metrics)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir (or HYBRID_TFRS_DATA_DIR) must name the data folder")
    unknown = set(FLAGS.ablations) - set(ABLATIONS)
    if unknown:
        raise app.UsageError(f"--ablations: unknown {sorted(unknown)}; use {list(ABLATIONS)}")
    cores = check_cores(FLAGS.cores)
    plan = run_plan(FLAGS.datasets, FLAGS.models, FLAGS.ablations, FLAGS.seeds)
    jobs = [PlannedRun(number, len(plan), *entry) for number, entry in enumerate(plan, 1)]
    try:
        done = run_all(jobs, cores)
    except RunFailed as error:
        sys.exit(str(error))
    runs, run_dirs, commands = {}, {}, []
    for job, outcome in zip(jobs, done):
        if outcome is None:  # --notrain and not finished
            continue
        command, metrics, folder = outcome
        commands.append(" ".join(["python"] + command[1:]))
        key = (job.dataset, job.name, job.flagfile, json.dumps(job.overrides))
        runs.setdefault(key, []).append(metrics)
        run_dirs.setdefault((job.dataset, job.name), []).append((job.seed, folder))
    rows = []
    for (dataset, name, flagfile, overrides), metrics in runs.items():
        rows += aggregate(dataset, name, flagfile, json.loads(overrides), metrics)
    paired, paired_notes = paired_tests(run_dirs)
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(f"{FLAGS.output}.json", "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)
    with open(f"{FLAGS.output}_paired.json", "w", encoding="utf-8") as handle:
        json.dump(paired, handle, indent=2)
    plots = []
    if FLAGS.plots:
        from plots import draw_all  # benchmarks/plots.py; matplotlib is the bench extra

        plots = draw_all(runs, os.path.dirname(FLAGS.output) or ".")
        for path in plots:
            print(f"wrote {path}")
    with open(f"{FLAGS.output}.md", "w", encoding="utf-8") as handle:
        names = [os.path.basename(path) for path in plots]
        handle.write(markdown(rows, commands, machine_name(), paired, paired_notes, names))
    print(f"wrote {FLAGS.output}.json, {FLAGS.output}_paired.json and {FLAGS.output}.md")


if __name__ == "__main__":
    app.run(main)
