"""The campaign's runs on the JAX backend, for a GPU machine without TensorFlow (issue 12, item 5).

    python benchmarks/jax_backend.py --data_dir=../shared/data --dataset=ml-1m \
        --runs=hybrid,fmlp-4-layers --seeds=0,1,2 --parallel=6 \
        --output_dir=benchmarks/results/jax_backend
    python benchmarks/jax_backend.py --output_dir=benchmarks/results/jax_backend --notrain

A run is ``flags/<dataset>_<model>.flags``, with the overrides of an ablation or
capacity-matched baseline of ``campaign_plan.ABLATIONS`` (``fmlp-4-layers``,
...), parsed by the trainer's own flags. The library builds its model, loss and
optimiser (hybrid_tfrs.run_model), Keras's ``fit`` trains it on the JAX backend,
and it stops as the trainer does: after ``--patience`` epochs without a better
validation NDCG@10 (``--validation_protocol``), or at ``--epochs``; the best
epoch's weights are tested under every protocol of the flagfile.

What differs from ``trainers/train.py`` (which needs TensorFlow):

- batches come from numpy: the trainer's examples (hybrid_tfrs.data.examples)
  in its length buckets, a new order each epoch from a numpy generator seeded
  by the run's seed. The same kind of batches, not the same order: seed s
  here is another draw than seed s there.
- every batch is padded to ``max_len``, so the training step compiles once;
  right padding cannot change a causal encoder's outputs.
- no checkpoints: a run takes minutes on a GPU. ``--max_minutes`` stops a run
  on the clock, and its record says so (``stopped_by: time``).

Writes ``<output_dir>/<dataset>/<name>/seed<s>/`` with ``metrics.json`` and
``test_ranks.npz`` (the trainer's record files; benchmarks/paired.py reads
them) and ``train.log``, then ``<output_dir>/summary.md``: every run's epochs,
best epoch, seconds an epoch and test NDCG@10, the means over seeds, and paired
tests of the first of ``--runs`` against each other on the same test users.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import json  # noqa: E402  (the backend is chosen before Keras is imported)
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from campaign_plan import ABLATIONS, MODELS, flagfile_config  # noqa: E402
from paired import compare, load_runs, table  # noqa: E402

from hybrid_tfrs.data.examples import (  # noqa: E402
    batch_widths,
    bucketed_batch_rows,
    training_examples,
)
from hybrid_tfrs.evaluation import evaluate  # noqa: E402
from hybrid_tfrs.run_data import load_split  # noqa: E402
from hybrid_tfrs.run_dir import METRICS_FILE, TEST_RANKS_FILE, write_json  # noqa: E402
from hybrid_tfrs.run_model import (  # noqa: E402
    build_model,
    compile_model,
    score_function,
    split_inputs,
)
from hybrid_tfrs.significance import write_ranks  # noqa: E402

flags.DEFINE_string(
    "data_dir", os.environ.get("HYBRID_TFRS_DATA_DIR"), "Folder with Beauty.txt and ml-1m/."
)
flags.DEFINE_string("dataset", "ml-1m", "Dataset of the flagfiles flags/<dataset>_<model>.flags.")
flags.DEFINE_list(
    "runs",
    ["hybrid", "fmlp-4-layers"],
    f"Models ({', '.join(MODELS)}) or names of campaign_plan.ABLATIONS; the paired tests "
    "compare the first with each other.",
)
flags.DEFINE_list("seeds", ["0"], "Seeds of every run.")
flags.DEFINE_list("override", [], "Extra flags for every run, e.g. epochs=2 (for smoke runs).")
flags.DEFINE_integer("parallel", 1, "Runs at once, each its own process (they share the GPU).")
flags.DEFINE_float("max_minutes", 0.0, "Stop a run on the clock after this long (0: never).")
flags.DEFINE_string("output_dir", "runs/jax_backend", "Where the records and summary.md go.")
flags.DEFINE_boolean("train", True, "False: only write summary.md from the records there.")
FLAGS = flags.FLAGS


class BucketBatches(keras.utils.PyDataset):
    """One epoch of the trainer's length-bucketed batches, from numpy
    (hybrid_tfrs.data.examples.bucketed_batch_rows; a new order each
    :meth:`next_epoch`). A batch is ``(inputs, targets)``, int32 [batch_size,
    max_len]: a short one is filled up with all-padding rows (no targets, no loss).
    """

    def __init__(self, inputs, targets, batch_size, widths, seed):
        super().__init__()
        self.inputs, self.targets, self.batch_size, self.widths = (
            inputs,
            targets,
            batch_size,
            widths,
        )
        self.rng = np.random.default_rng(seed)
        self.next_epoch()

    def next_epoch(self):
        self.batches = bucketed_batch_rows(self.inputs, self.batch_size, self.widths, self.rng)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        rows = self.batches[index]
        padding = ((0, self.batch_size - len(rows)), (0, 0))
        return np.pad(self.inputs[rows], padding), np.pad(self.targets[rows], padding)


def run_config(name, seed):
    """The TrainConfig of run ``name`` (a model or an ablation) with ``seed``."""
    overrides = dict(ABLATIONS.get(name, {}))
    model = overrides.pop("model", name if name in MODELS else "hybrid")
    extra = dict(o.split("=", 1) for o in FLAGS.override)
    flagfile = f"flags/{FLAGS.dataset}_{model}.flags"
    settings = {**overrides, **extra, "seed": seed, "data_dir": FLAGS.data_dir}
    return flagfile_config(flagfile, settings)


def train_one(name, seed, folder, log):
    """Trains run ``name`` with ``seed`` to patience; writes its record into ``folder``."""
    config = run_config(name, seed)
    keras.utils.set_random_seed(config.seed)
    _, split = load_split(config)
    inputs, targets = training_examples(split.train, config.max_len, config.window_stride)
    widths = batch_widths(config.max_len, config.bucket_width_list)
    batches = BucketBatches(inputs, targets, config.batch_size, widths, config.seed)
    model = build_model(
        config, split.num_items, split.item_popularity, np.count_nonzero(targets) / len(batches)
    )
    compile_model(model, config, len(batches))
    log(
        f"{name} seed {seed} on {keras.backend.backend()} ({_device()}): "
        f"{model.encoder.count_params():,} encoder parameters, {len(batches)} batches an epoch"
    )
    score_fn = score_function(model)
    best = {"score": -1.0, "epoch": 0, "weights": None}
    history, started, stopped_by = [], time.time(), "epochs"
    for epoch in range(1, config.epochs + 1):
        tick = time.time()
        loss = model.fit(batches, epochs=1, verbose=0, shuffle=False).history["loss"][-1]
        batches.next_epoch()
        seconds = time.time() - tick
        valid = _evaluate(model, split, "valid", config, (config.validation_protocol,), score_fn)
        score = valid["protocols"][config.validation_protocol]["NDCG@10"]
        history.append(
            {"epoch": epoch, "loss": loss, "valid_ndcg10": score, "epoch_seconds": seconds}
        )
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "weights": model.get_weights()}
        log(
            f"epoch {epoch}: loss {loss:.4f}, valid {config.validation_protocol} NDCG@10 "
            f"{score:.4f} (best {best['score']:.4f} at {best['epoch']}), {seconds:.1f} s"
        )
        if epoch - best["epoch"] >= config.patience:
            stopped_by = "patience"
            break
        if FLAGS.max_minutes and time.time() - started > 60 * FLAGS.max_minutes:
            stopped_by = "time"
            break
    model.set_weights(best["weights"])
    protocols = config.protocol_list
    valid = _evaluate(model, split, "valid", config, protocols, score_fn)
    test = _evaluate(model, split, "test", config, protocols, score_fn, return_ranks=True)
    epoch_seconds = [row["epoch_seconds"] for row in history]
    write_ranks(os.path.join(folder, TEST_RANKS_FILE), test["ranks"], split.user_ids, "test")
    write_json(
        os.path.join(folder, METRICS_FILE),
        {
            "dataset": config.dataset,
            "model": config.model,
            "name": name,
            "backend": keras.backend.backend(),
            "device": _device(),
            "config": config.to_json(),
            "valid": valid["protocols"],
            "test": test["protocols"],
            "test_alpha": test["alpha"],
            "best_epoch": best["epoch"],
            "epochs_trained": len(history),
            "stopped_by": stopped_by,
            "median_epoch_seconds": float(np.median(epoch_seconds)),
            "train_minutes": (time.time() - started) / 60,
            "history": history,
            "parameters": int(model.encoder.count_params()),
        },
    )
    log(
        "test NDCG@10: "
        + ", ".join(f"{p} {m['NDCG@10']:.4f}" for p, m in test["protocols"].items())
    )


def _evaluate(model, split, part, config, protocols, score_fn, return_ranks=False):
    histories = split.valid_histories if part == "valid" else split.test_histories
    return evaluate(
        **split_inputs(model, split, part, config.max_len, score_fn),
        protocols=protocols,
        seed=config.seed,
        batch_size=config.eval_batch_size,
        history_lengths=np.array([len(h) for h in histories]),
        progress=False,
        return_ranks=return_ranks,
    )


def _device():
    device = keras.backend.backend() == "jax" and __import__("jax").devices()[0]
    return getattr(device, "device_kind", "cpu") if device else "cpu"


def run_folder(name, seed):
    return os.path.join(FLAGS.output_dir, FLAGS.dataset, name, f"seed{seed}")


def train_all(plan):
    """Each (name, seed) of ``plan`` in its own process, ``--parallel`` at a time."""
    waiting, running, failed = list(plan), [], []
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}
    while waiting or running:
        while waiting and len(running) < FLAGS.parallel:
            name, seed = waiting.pop(0)
            folder = run_folder(name, seed)
            os.makedirs(folder, exist_ok=True)
            command = [
                sys.executable,
                __file__,
                *_passed_flags(),
                f"--runs={name}",
                f"--seeds={seed}",
            ]
            with open(os.path.join(folder, "train.log"), "w") as log:
                process = subprocess.Popen(
                    [*command, "--parallel=0"], stdout=log, stderr=subprocess.STDOUT, env=env
                )
            running.append((name, seed, process))
            print(f"started {name} seed {seed} ({folder}/train.log)", flush=True)
        time.sleep(1)
        for entry in [entry for entry in running if entry[2].poll() is not None]:
            running.remove(entry)
            name, seed, process = entry
            print(f"{name} seed {seed}: exit {process.returncode}", flush=True)
            if process.returncode:
                failed.append(f"{name} seed {seed} ({run_folder(name, seed)}/train.log)")
    return failed


def _passed_flags():
    """The flags of this process that a run's own process needs."""
    names = ("data_dir", "dataset", "override", "max_minutes", "output_dir")
    return [FLAGS[name].serialize() for name in names if FLAGS[name].value is not None]


def summary(names, seeds):
    """Markdown lines: every finished run, the means over seeds, the paired tests."""
    lines = [
        f"# {FLAGS.dataset} on the JAX backend",
        "",
        "| run | seed | device | epochs | best epoch | stopped by | s an epoch (median) "
        "| test full NDCG@10 | test full-unseen NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    found = {}
    for name in names:
        for seed in seeds:
            path = os.path.join(run_folder(name, seed), METRICS_FILE)
            if not os.path.exists(path):
                continue
            with open(path) as file:
                record = json.load(file)
            found.setdefault(name, []).append(run_folder(name, seed))
            test = record["test"]
            lines.append(
                f"| {name} | {seed} | {record['device']} | {record['epochs_trained']} | "
                f"{record['best_epoch']} | {record['stopped_by']} | "
                f"{record['median_epoch_seconds']:.2f} | {test['full']['NDCG@10']:.4f} | "
                f"{test['full-unseen']['NDCG@10']:.4f} |"
            )
    first = names[0]
    for name in names[1:]:
        if first in found and name in found:
            runs = load_runs(found[first], first)
            lines += ["", f"Paired test on the test users, {first} against {name}:", ""]
            lines += table(compare(runs, load_runs(found[name], name)), first, name)
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    unknown = [name for name in FLAGS.runs if name not in MODELS and name not in ABLATIONS]
    if unknown:
        raise app.UsageError(f"--runs: unknown {unknown}; use {list(MODELS)} or {list(ABLATIONS)}")
    if FLAGS.train and keras.backend.backend() != "jax":
        raise app.UsageError(f"KERAS_BACKEND={keras.backend.backend()}: this script trains on jax")
    plan = [(name, seed) for name in FLAGS.runs for seed in FLAGS.seeds]
    if FLAGS.train and FLAGS.parallel == 0:  # one run, in this process
        ((name, seed),) = plan
        folder = run_folder(name, seed)
        os.makedirs(folder, exist_ok=True)
        train_one(name, seed, folder, lambda line: print(line, flush=True))
        return
    failed = train_all(plan) if FLAGS.train else []
    lines = summary(FLAGS.runs, FLAGS.seeds)
    path = os.path.join(FLAGS.output_dir, f"{FLAGS.dataset}_summary.md")
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    if failed:
        sys.exit("failed: " + "; ".join(failed))


if __name__ == "__main__":
    app.run(main)
