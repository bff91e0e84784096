"""The campaign's runs on the JAX backend, for a GPU machine without TensorFlow (issue 12, item 5).

    python benchmarks/jax_backend.py --data_dir=../shared/data --dataset=ml-1m \
        --runs=hybrid,fmlp-4-layers --seeds=0,1,2 --parallel=6 \
        --output_dir=benchmarks/results/jax_backend
    python benchmarks/jax_backend.py --output_dir=benchmarks/results/jax_backend --notrain

A run is ``flags/<dataset>_<model>.flags``, with the overrides of an ablation or
capacity-matched baseline of ``campaign_plan.ABLATIONS`` (``fmlp-4-layers``,
...), planned and parsed as ``accuracy.py`` plans them (``campaign_plan.run_plan``,
the trainer's own flags). The library builds its model, loss and optimiser
(hybrid_tfrs.run_model), Keras's ``fit`` trains it on the JAX backend, and it
stops by the trainer's rule (``run_dir.stop_reason``: ``--patience``, the
``--max_train_minutes`` budget) or at ``--epochs``; the best epoch's weights are
tested under every protocol of the flagfile. Runs this script cannot train as the
trainer would are refused before any starts: bidirectional encoders
(``--causal=false`` trains on each prefix's last position), ``--prepared_dir``,
and ablations trained for the hybrid's minutes.

What differs from ``trainers/train.py`` (which needs TensorFlow):

- batches come from numpy: the trainer's examples (hybrid_tfrs.data.examples)
  in its length buckets (one bucket with ``--nobucket_by_length``), a new order
  each epoch from a numpy generator seeded by the run's seed. The same kind of
  batches, not the same order: seed s here is another draw than seed s there.
- on a GPU every batch is padded to ``max_len``, so the training step compiles
  once (``--full_width``; right padding cannot change a causal encoder's outputs);
  on a CPU each is cut to its bucket's width, as the tf.data pipeline cuts it.
- no checkpoints, so no resume: a run takes minutes on a GPU.

Writes ``<output_dir>/<dataset>/<name>/seed<s>/`` with ``metrics.json`` (the
trainer's fields but ``test_buckets``, ``data_stats`` and ``mean_epoch_seconds``;
its ``history`` rows as the trainer writes them) and ``test_ranks.npz`` (as the
trainer writes it; benchmarks/paired.py reads them) and ``train.log``, then
``<output_dir>/<dataset>_summary.md``: every run's epochs, best epoch, seconds an
epoch and test NDCG@10, and paired tests of the first of ``--runs`` against each
other on the same test users.
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
from campaign_plan import (  # noqa: E402
    ABLATIONS,
    MODELS,
    SAME_AS_HYBRID,
    flagfile_config,
    run_plan,
)
from paired import PROTOCOLS, compare, load_runs, table  # noqa: E402

from hybrid_tfrs.data.examples import (  # noqa: E402
    batch_widths,
    bucketed_batch_rows,
    length_buckets,
    training_examples,
)
from hybrid_tfrs.run_data import check_sampled_protocols, load_split  # noqa: E402
from hybrid_tfrs.run_dir import METRICS_FILE, TEST_RANKS_FILE, stop_reason, write_json  # noqa: E402
from hybrid_tfrs.run_model import (  # noqa: E402
    build_model,
    compile_model,
    evaluate_in_memory,
    score_function,
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
flags.DEFINE_integer(
    "parallel",
    1,
    "Runs at once, each its own process (they share the GPU); 0: the one run of --runs and "
    "--seeds in this process (what each run's process is given).",
    lower_bound=0,
)
flags.DEFINE_boolean(
    "full_width",
    None,
    "Pad every batch to max_len (one compiled training step) rather than cut it to its "
    "length bucket's width (a step compiled per width, less padding to compute). Default: "
    "full width on a GPU or TPU, where the padding costs little, bucket widths on a CPU.",
)
flags.DEFINE_string(
    "output_dir", "runs/jax_backend", "Where the records and <dataset>_summary.md go."
)
flags.DEFINE_boolean(
    "train", True, "False: only write <dataset>_summary.md from the records there."
)
FLAGS = flags.FLAGS


class BucketBatches(keras.utils.PyDataset):
    """One epoch of the trainer's length-bucketed batches, from numpy
    (hybrid_tfrs.data.examples.bucketed_batch_rows; a new order each
    :meth:`next_epoch`). A batch is ``(inputs, targets)``, int32 [batch_size, W]:
    W = max_len with ``full_width`` (one compiled step), else its bucket's width
    (a step compiled per width, as the tf.data pipeline cuts them); a short batch
    is filled up with all-padding rows (no targets, no loss).
    """

    def __init__(self, inputs, targets, batch_size, widths, seed, full_width):
        super().__init__()
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        self.buckets = length_buckets(inputs, widths)
        # A batch's width: its bucket's, or max_len for every bucket.
        self.bucket_widths = np.full(len(widths), inputs.shape[1]) if full_width else widths
        self.rng = np.random.default_rng(seed)
        self.next_epoch()

    def next_epoch(self):
        self.batches = bucketed_batch_rows(self.buckets, self.batch_size, self.rng)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        rows = self.batches[index]
        width = self.bucket_widths[self.buckets[rows[0]]]  # one bucket a batch
        padding = ((0, self.batch_size - len(rows)), (0, 0))
        return (
            np.pad(self.inputs[rows, :width], padding),
            np.pad(self.targets[rows, :width], padding),
        )


def planned_configs():
    """{(name, seed): TrainConfig} of --runs and --seeds, planned as accuracy.py plans
    them; UsageError naming a run this script cannot train as the trainer would."""
    models = [name for name in FLAGS.runs if name in MODELS]
    ablations = [name for name in FLAGS.runs if name not in MODELS]
    extra = dict(o.split("=", 1) for o in FLAGS.override)
    if FLAGS.data_dir:
        extra["data_dir"] = FLAGS.data_dir
    configs = {}
    for _, name, flagfile, overrides, seed in run_plan(
        [FLAGS.dataset], models, ablations, FLAGS.seeds
    ):
        if SAME_AS_HYBRID in overrides.values():
            raise app.UsageError(f"--runs: {name} trains for the hybrid's minutes (accuracy.py)")
        config = flagfile_config(flagfile, {**overrides, **extra, "seed": seed})
        if not config.causal:
            raise app.UsageError(
                f"--runs: {name} is bidirectional (--causal=false), trained on each prefix's "
                "last position by trainers/train.py; this script trains causal encoders only"
            )
        if config.prepared_dir:
            raise app.UsageError("--override: --prepared_dir needs TensorFlow (its shards)")
        configs[name, seed] = config
    return configs


def train_one(name, config, folder, log):
    """Trains run ``name`` until the trainer's rule stops it; its record into ``folder``."""
    config.validate()
    keras.utils.set_random_seed(config.seed)
    _, split = load_split(config)
    check_sampled_protocols(config, split)
    inputs, targets = training_examples(split.train, config.max_len, config.window_stride)
    widths = batch_widths(config.max_len, config.bucket_width_list)
    widths = widths if config.bucket_by_length else [config.max_len]
    device = _device()
    full_width = FLAGS.full_width if FLAGS.full_width is not None else device != "cpu"
    batches = BucketBatches(inputs, targets, config.batch_size, widths, config.seed, full_width)
    model = build_model(
        config, split.num_items, split.item_popularity, np.count_nonzero(targets) / len(batches)
    )
    compile_model(model, config, len(batches))
    log(
        f"{name} seed {config.seed} on {keras.backend.backend()} ({device}): "
        f"{model.encoder.count_params():,} encoder parameters, {len(batches)} batches an epoch"
    )
    score_fn = score_function(model)
    # The trainer's state, its rule (run_dir.stop_reason) and its history rows.
    state = {"best_score": -1.0, "best_epoch": 0, "waited": 0, "elapsed_seconds": 0.0}
    history, best_weights, stop = [], None, None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss = model.fit(batches, epochs=1, verbose=0, shuffle=False).history["loss"][-1]
        batches.next_epoch()
        seconds = time.perf_counter() - started
        valid = _evaluate(model, split, "valid", config, (config.validation_protocol,), score_fn)
        score = valid["protocols"][config.validation_protocol]["NDCG@10"]
        state["elapsed_seconds"] += seconds
        history.append(
            {
                "epoch": epoch,
                "val_ndcg@10": score,
                "epoch_seconds": seconds,
                "validation_seconds": time.perf_counter() - started - seconds,
                "loss": float(loss),
                "elapsed_seconds": state["elapsed_seconds"],
                "val_alpha": valid["alpha"],
            }
        )
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, waited=0)
            best_weights = model.get_weights()
        else:
            state["waited"] += 1
        log(
            f"epoch {epoch}/{config.epochs} - loss {loss:.4f} - val NDCG@10 {score:.4f} (best "
            f"{state['best_score']:.4f} at epoch {state['best_epoch']}) - {seconds:.1f}s"
        )
        stop = stop_reason(state, config)
        if stop:
            log(f"stopped: {stop[1]}")
            break
    model.set_weights(best_weights)
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
            "device": device,
            "config": config.to_json(),
            "valid": valid["protocols"],
            "test": test["protocols"],
            "test_alpha": test["alpha"],
            "best_epoch": state["best_epoch"],
            "epochs_trained": len(history),
            "stopped_by": stop[0] if stop else "epochs",
            "median_epoch_seconds": float(np.median(epoch_seconds)),
            "train_minutes": state["elapsed_seconds"] / 60,
            "history": history,
            "parameters": int(model.encoder.count_params()),
        },
    )
    log(
        "test NDCG@10: "
        + ", ".join(f"{p} {m['NDCG@10']:.4f}" for p, m in test["protocols"].items())
    )


def _evaluate(model, split, part, config, protocols, score_fn, return_ranks=False):
    return evaluate_in_memory(
        model,
        split,
        part,
        config.max_len,
        protocols,
        config.eval_batch_size,
        score_fn,
        seed=config.seed,
        progress=False,
        return_ranks=return_ranks,
    )


def _device():
    """The kind of JAX's first device (e.g. "NVIDIA H100 80GB HBM3"), or "cpu"."""
    import jax

    device = jax.devices()[0]
    return "cpu" if device.platform == "cpu" else device.device_kind


def run_folder(name, seed):
    return os.path.join(FLAGS.output_dir, FLAGS.dataset, name, f"seed{seed}")


def train_all(plan):
    """Each (name, seed) of ``plan`` in its own process, ``--parallel`` at a time; the
    runs that failed, each with its log."""
    waiting, running, failed = list(plan), [], []
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}
    while waiting or running:
        while waiting and len(running) < FLAGS.parallel:
            name, seed = waiting.pop(0)
            folder = run_folder(name, seed)
            os.makedirs(folder, exist_ok=True)
            command = [sys.executable, __file__, *_passed_flags()]
            command += [f"--runs={name}", f"--seeds={seed}", "--parallel=0"]
            with open(os.path.join(folder, "train.log"), "w") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
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
    names = ("data_dir", "dataset", "override", "output_dir", "full_width")
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
            ndcg = [
                f"{record['test'][p]['NDCG@10']:.4f}" if p in record["test"] else "-"
                for p in PROTOCOLS
            ]
            lines.append(
                f"| {name} | {seed} | {record['device']} | {record['epochs_trained']} | "
                f"{record['best_epoch']} | {record['stopped_by']} | "
                f"{record['median_epoch_seconds']:.2f} | {' | '.join(ndcg)} |"
            )
    first = names[0]
    runs = load_runs(found[first], first) if first in found else None
    for name in names[1:]:
        if runs and name in found:
            lines += ["", f"Paired test on the test users, {first} against {name}:", ""]
            protocols = [p for p in PROTOCOLS if p in runs[0].ranks]
            lines += table(compare(runs, load_runs(found[name], name), protocols), first, name)
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    unknown = [name for name in FLAGS.runs if name not in MODELS and name not in ABLATIONS]
    if unknown:
        raise app.UsageError(f"--runs: unknown {unknown}; use {list(MODELS)} or {list(ABLATIONS)}")
    if FLAGS.train and keras.backend.backend() != "jax":
        raise app.UsageError(f"KERAS_BACKEND={keras.backend.backend()}: this script trains on jax")
    configs = planned_configs() if FLAGS.train else {}  # every run checked before any starts
    if FLAGS.train and FLAGS.parallel == 0:  # one run, in this process
        (((name, seed), config),) = configs.items()
        folder = run_folder(name, seed)
        os.makedirs(folder, exist_ok=True)
        train_one(name, config, folder, lambda line: print(line, flush=True))
        return
    failed = train_all(list(configs)) if FLAGS.train else []
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
