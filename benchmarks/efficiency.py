"""Time per training step and peak memory of the encoders as the history grows.

For every (scope, max_len, model) configuration a fresh subprocess builds the
model, compiles one training step (``tf.function``, XLA by default), runs
``--warmup`` untimed steps and ``--steps`` timed ones, and reports the median
milliseconds per step and its own peak resident memory. The parent enforces a
per-configuration timeout and memory cap, so a configuration that runs out of
memory or time becomes a row with an ``error`` instead of ending the run.

Scopes:
    encoder     forward + backward of the encoder alone, loss = mean(output**2),
                plus an Adam update.
    train_step  the whole retrieval training step: encoder, full-softmax loss
                over the catalogue with a target at every position, backward
                and an Adam update.
    train_step_sampled
                the same step with the sampled softmax (256 mixed negatives,
                logQ correction) in place of the full softmax.
    train_step_seen_bias
                the full-softmax step with the learned seen-item offset
                (``--seen_item_bias``: its log-partition term from [B, L, L]
                logits of each prefix's items).

Rows of an earlier run (``--output``) are kept unless this run measures the
same (scope, model, L) again, so scopes can be added one run at a time.

Usage:
    python benchmarks/efficiency.py                      # full benchmark
    python benchmarks/efficiency.py --from_json=benchmarks/results/efficiency.json
    python benchmarks/efficiency.py --scopes=train_step --lengths=50,200 --reference=fmlp \
        --models=hybrid,fmlp,linrec,hybrid-statistics-gate,hybrid-shared-block,hybrid-vector-gate,\
hybrid-blend-norm,hybrid-all-features-hidden,hybrid-shared-ffn \
        --output=benchmarks/results/gate_cost.json --markdown=benchmarks/results/gate_cost.md
"""

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from hybrid_tfrs.config import GATE_VARIANTS

MODELS = ("hybrid", "linrec", "fmlp", "sasrec", *GATE_VARIANTS)
SCOPES = ("encoder", "train_step", "train_step_sampled", "train_step_seen_bias")
GROWTH_FROM = 200  # growth is reported from this L (or the smallest measured) to the largest
OUT_OF_MEMORY = "out of memory"
TIMEOUT = "timeout"
POLL_INTERVAL_S = 0.05
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS[:4]), f"Encoders to benchmark, among {MODELS}.")
flags.DEFINE_string("reference", "sasrec", "Model the ratio tables divide by.")
flags.DEFINE_list("lengths", ["50", "200", "800", "3200"], "Sequence lengths L (max_len).")
flags.DEFINE_list("scopes", list(SCOPES), f"What a step covers, among {SCOPES}.")
flags.DEFINE_integer("batch_size", 64, "Sequences per batch.", lower_bound=1)
flags.DEFINE_integer("hidden_dim", 64, "Hidden size.", lower_bound=1)
flags.DEFINE_integer("num_layers", 2, "Blocks per stack.", lower_bound=1)
flags.DEFINE_integer(
    "num_items", 3416, "Catalogue size N (ML-1M: 3416 items + padding).", lower_bound=1
)
flags.DEFINE_float(
    "padding_fraction",
    0.0,
    "Share of each row that is right padding.",
    lower_bound=0.0,
    upper_bound=0.99,
)
flags.DEFINE_integer("steps", 20, "Timed steps per configuration (median reported).", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first (the first compiles).", lower_bound=1)
flags.DEFINE_boolean(
    "xla", True, "Compile the step with XLA (jit_compile=True); --noxla for graph mode."
)
flags.DEFINE_float("timeout_s", 600.0, "Wall-clock limit per configuration (s).", lower_bound=1.0)
flags.DEFINE_float(
    "memory_limit_gb", 20.0, "Resident-memory cap per configuration (GiB).", lower_bound=0.01
)
flags.DEFINE_string(
    "output",
    os.path.join(RESULTS_DIR, "efficiency.json"),
    "JSON rows (rewritten after each configuration).",
)
flags.DEFINE_string("markdown", os.path.join(RESULTS_DIR, "efficiency.md"), "Markdown tables.")
flags.DEFINE_string("from_json", None, "Only regenerate --markdown from this JSON file.")
flags.DEFINE_string("child", None, "Internal: JSON configuration to measure in this process.")
flags.DEFINE_string("child_result", None, "Internal: where the child writes its result.")
flags.register_validator(
    "models", lambda v: set(v) <= set(MODELS), f"--models must be among {MODELS}"
)
flags.register_validator(
    "scopes", lambda v: set(v) <= set(SCOPES), f"--scopes must be among {SCOPES}"
)
flags.register_validator(
    "lengths",
    lambda v: all(x.isdigit() and int(x) > 0 for x in v),
    "--lengths must be positive integers",
)


# --------------------------------------------------------------------------- child


def peak_rss_mb():
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_batch(batch, length, num_items, padding_fraction, rng):
    """Random right-padded ids [B, L] and next-item targets (0 where padded)."""
    import numpy as np

    ids = rng.integers(1, num_items + 1, size=(batch, length), dtype=np.int32)
    targets = rng.integers(1, num_items + 1, size=(batch, length), dtype=np.int32)
    targets[:, :-1] = ids[:, 1:]
    num_padded = min(int(round(padding_fraction * length)), length - 1)
    if num_padded:
        ids[:, length - num_padded :] = 0
        targets[:, length - num_padded - 1 :] = 0
    return ids, targets


def measure(config):
    """Builds, compiles and times one configuration in this process."""
    import numpy as np
    import tensorflow as tf

    import hybrid_tfrs
    from hybrid_tfrs.backend import keras, ops

    baseline_mb = peak_rss_mb()
    keras.utils.set_random_seed(0)
    ids, targets = make_batch(
        config["batch"],
        config["max_len"],
        config["num_items"],
        config["padding_fraction"],
        np.random.default_rng(0),
    )
    ids, targets = tf.constant(ids), tf.constant(targets)
    variant = GATE_VARIANTS.get(config["model"])
    encoder = hybrid_tfrs.build_encoder(
        "hybrid" if variant is not None else config["model"],
        num_items=config["num_items"],
        max_len=config["max_len"],
        hidden_dim=config["hidden_dim"],
        num_layers=config["num_layers"],
        **(variant or {}),
    )
    if config["scope"] == "encoder":
        model = encoder

        def loss_fn(ids, targets):
            return ops.mean(ops.square(encoder(ids, training=True)))

    else:
        loss = "sampled_softmax" if config["scope"] == "train_step_sampled" else "softmax"
        model = hybrid_tfrs.SequentialRetrievalModel(
            encoder,
            loss=loss,
            num_negatives=256,
            seen_item_bias=config["scope"] == "train_step_seen_bias",
        )

        def loss_fn(ids, targets):
            return model.compute_loss(x=ids, y=targets, y_pred=model(ids, training=True))

    variables = model.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(variables)

    @tf.function(jit_compile=config["xla"])
    def train_step(ids, targets):
        with tf.GradientTape() as tape:
            loss = loss_fn(ids, targets)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    def timed_step():
        start = time.perf_counter()
        loss = float(train_step(ids, targets))
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss}")
        return time.perf_counter() - start

    compile_s = timed_step()
    for _ in range(config["warmup"] - 1):
        timed_step()
    times = [timed_step() for _ in range(config["steps"])]
    return {
        "ms_per_step": round(1000.0 * statistics.median(times), 3),
        "peak_memory_mb": round(peak_rss_mb(), 1),
        "baseline_memory_mb": round(baseline_mb, 1),
        "compile_s": round(compile_s, 2),
    }


def run_child(config_json, result_path):
    """Child entry point: measures and writes figures or an error as JSON."""
    try:
        result = measure(json.loads(config_json))
    except Exception as error:  # noqa: BLE001 - any failure becomes an error row
        result = {"error": describe_exception(error)}
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def describe_exception(error):
    """``"out of memory"`` for allocation failures, else the exception's last line."""
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError":
        return OUT_OF_MEMORY
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:500]


# -------------------------------------------------------------------------- parent


def machine_description():
    """CPU model name, usable cores and RAM of this machine."""
    cpu = platform.processor() or platform.machine()
    memory_gib = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        memory_gib = kib / 2**20
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = f"{memory_gib:.1f} GiB RAM" if memory_gib else "unknown RAM"
    return f"{cpu}, {cores} cores, {ram}"


def resident_bytes(pid):
    """Current resident memory of a process (bytes), or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def last_line(path):
    """Last non-empty line of a text file ('' if none)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][:500] if lines else ""


def run_config(config, timeout_s, memory_limit_bytes):
    """Measures one configuration in a subprocess under a timeout and memory cap.

    Returns the child's figures, or ``{"error": ...}``.
    """
    with tempfile.TemporaryDirectory(prefix="efficiency_") as tmp:
        result_path = os.path.join(tmp, "result.json")
        stderr_path = os.path.join(tmp, "stderr.txt")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            f"--child={json.dumps(config)}",
            f"--child_result={result_path}",
        ]
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
        with open(stderr_path, "w", encoding="utf-8") as stderr:
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            deadline = time.monotonic() + timeout_s
            killed_for = None
            while child.poll() is None:
                if resident_bytes(child.pid) > memory_limit_bytes:
                    killed_for = OUT_OF_MEMORY
                elif time.monotonic() > deadline:
                    killed_for = TIMEOUT
                if killed_for:
                    child.kill()
                    child.wait()
                    break
                time.sleep(POLL_INTERVAL_S)
        if killed_for:
            return {"error": killed_for}
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                return json.load(f)
        if child.returncode == -9:  # SIGKILL not sent by us: the kernel's OOM killer
            return {"error": OUT_OF_MEMORY}
        return {"error": last_line(stderr_path) or f"exit code {child.returncode}"}


def write_json(rows, path):
    """Writes the rows as a JSON list (creating the folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")


def run_benchmark():
    """Runs every configuration, printing progress and saving rows as it goes."""
    lengths = sorted(int(length) for length in FLAGS.lengths)
    configs = [
        {
            "model": model,
            "max_len": length,
            "batch": FLAGS.batch_size,
            "hidden_dim": FLAGS.hidden_dim,
            "num_layers": FLAGS.num_layers,
            "scope": scope,
            "num_items": FLAGS.num_items,
            "padding_fraction": FLAGS.padding_fraction,
            "steps": FLAGS.steps,
            "warmup": FLAGS.warmup,
            "xla": FLAGS.xla,
        }
        for scope in FLAGS.scopes
        for length in lengths
        for model in FLAGS.models
    ]
    machine = machine_description()
    print(f"{len(configs)} configurations on {machine}", flush=True)
    rows = []
    if os.path.exists(FLAGS.output):
        with open(FLAGS.output, encoding="utf-8") as f:
            remeasured = {_key(config) for config in configs}
            rows = [row for row in json.load(f) if _key(row) not in remeasured]
    start = time.monotonic()
    for index, config in enumerate(configs, 1):
        label = (
            f"[{index}/{len(configs)}] {config['scope']} {config['model']} L={config['max_len']}"
        )
        print(f"{label} ...", flush=True)
        config_start = time.monotonic()
        result = run_config(config, FLAGS.timeout_s, FLAGS.memory_limit_gb * 2**30)
        row = {
            **config,
            "ms_per_step": None,
            "peak_memory_mb": None,
            "machine": machine,
            "backend": "tensorflow",
            "error": None,
            **result,
        }
        rows.append(row)
        write_json(rows, FLAGS.output)
        outcome = (
            row["error"] or f"{row['ms_per_step']:.1f} ms/step, {row['peak_memory_mb']:.0f} MB"
        )
        print(
            f"{label}: {outcome} ({time.monotonic() - config_start:.0f} s, "
            f"total {time.monotonic() - start:.0f} s)",
            flush=True,
        )
    return rows


def _key(row):
    return row["scope"], row["model"], row["max_len"]


# ------------------------------------------------------------------------ markdown


def _ok(row):
    return row is not None and row.get("error") is None


def _cell(row):
    if row is None:
        return "-"
    if not _ok(row):
        return f"**{row['error']}**"
    return f"{row['ms_per_step']:.1f} ms / {row['peak_memory_mb']:.0f} MB"


def _ratio_cell(row, reference):
    if not (_ok(row) and _ok(reference)):
        return "-"
    time_ratio = row["ms_per_step"] / reference["ms_per_step"]
    memory_ratio = row["peak_memory_mb"] / reference["peak_memory_mb"]
    return f"{time_ratio:.2f}x / {memory_ratio:.2f}x"


def _growth_cell(by_length):
    """Growth of time and of memory above baseline, from L=GROWTH_FROM (or the smallest
    L) to the largest L with a result."""
    measured = [(length, row) for length, row in sorted(by_length.items()) if _ok(row)]
    if any(length == GROWTH_FROM for length, _ in measured):
        measured = [(length, row) for length, row in measured if length >= GROWTH_FROM]
    if len(measured) < 2:
        return "-"
    (first_length, first), (last_length, last) = measured[0], measured[-1]
    time_growth = last["ms_per_step"] / first["ms_per_step"]
    first_memory = first["peak_memory_mb"] - first.get("baseline_memory_mb", 0.0)
    last_memory = last["peak_memory_mb"] - last.get("baseline_memory_mb", 0.0)
    memory = f"{last_memory / first_memory:.1f}x" if first_memory > 0 else "-"
    return f"{time_growth:.1f}x / {memory} (L {first_length}->{last_length})"


def markdown_report(rows):
    """Markdown: one table per scope (rows = L, columns = models), ratios, growth."""
    if not rows:
        return "# Encoder efficiency\n\nNo results.\n"
    first = rows[0]
    lines = [
        "# Encoder efficiency",
        "",
        f"Machine: {first['machine']}; backend {first['backend']}, "
        f"XLA {'on' if first['xla'] else 'off'}.",
        f"Batch {first['batch']}, hidden {first['hidden_dim']}, {first['num_layers']} layers, "
        f"{first['num_items']} items, padding fraction {first['padding_fraction']}; "
        f"median of {first['steps']} steps after {first['warmup']} warmup steps.",
        "Memory is each configuration's own process peak RSS (TensorFlow runtime and "
        "compilation included). Timings are specific to this machine.",
    ]
    baselines = [
        row["baseline_memory_mb"] for row in rows if _ok(row) and "baseline_memory_mb" in row
    ]
    if baselines:
        lines.append(
            f"A process holds about {statistics.median(baselines):.0f} MB after importing "
            "TensorFlow; memory growth is computed on the peak above that baseline."
        )
    for scope in SCOPES:
        scope_rows = [row for row in rows if row["scope"] == scope]
        if not scope_rows:
            continue
        models = [model for model in MODELS if any(row["model"] == model for row in scope_rows)]
        lengths = sorted({row["max_len"] for row in scope_rows})
        table = {(row["model"], row["max_len"]): row for row in scope_rows}
        header = "| L | " + " | ".join(models) + " |"
        rule = "|---:|" + "---:|" * len(models)
        lines += ["", f"## Scope `{scope}`", "", "Time per step / peak memory:", "", header, rule]
        for length in lengths:
            cells = [_cell(table.get((model, length))) for model in models]
            lines.append(f"| {length} | " + " | ".join(cells) + " |")
        growth = [
            _growth_cell({length: table.get((model, length)) for length in lengths})
            for model in models
        ]
        lines.append("| growth (time / memory) | " + " | ".join(growth) + " |")
        if len(lengths) > 1:
            start = GROWTH_FROM if GROWTH_FROM in lengths else lengths[0]
            linear = lengths[-1] / start
            lines += [
                "",
                f"Linear growth from L={start} to L={lengths[-1]} would be {linear:g}x, "
                f"quadratic {linear**2:g}x.",
            ]
        reference_model = FLAGS.reference
        if reference_model in models:
            lines += [
                "",
                f"Ratio to {reference_model} at the same L (time / memory):",
                "",
                header,
                rule,
            ]
            for length in lengths:
                reference = table.get((reference_model, length))
                cells = [_ratio_cell(table.get((model, length)), reference) for model in models]
                lines.append(f"| {length} | " + " | ".join(cells) + " |")
    lines += _loss_report(rows)
    return "\n".join(lines) + "\n"


def _loss_report(rows):
    """What the loss costs (train_step - encoder) and what the sampled softmax saves."""
    table = {_key(row): row for row in rows if _ok(row)}
    keys = sorted(
        {(model, length) for scope, model, length in table if scope == "train_step"},
        key=lambda key: (MODELS.index(key[0]), key[1]),
    )
    lines = []
    for model, length in keys:
        full = table[("train_step", model, length)]
        encoder = table.get(("encoder", model, length))
        sampled = table.get(("train_step_sampled", model, length))
        seen = table.get(("train_step_seen_bias", model, length))
        if encoder is None and sampled is None and seen is None:
            continue
        loss_ms = full["ms_per_step"] - encoder["ms_per_step"] if encoder else None
        cells = [
            model,
            str(length),
            f"{full['ms_per_step']:.1f}",
            f"{encoder['ms_per_step']:.1f}" if encoder else "-",
            f"{loss_ms:.1f} ({loss_ms / full['ms_per_step']:.0%})" if encoder else "-",
            f"{sampled['ms_per_step']:.1f}" if sampled else "-",
            f"{full['ms_per_step'] / sampled['ms_per_step']:.2f}x" if sampled else "-",
            f"{seen['ms_per_step']:.1f}" if seen else "-",
            f"{seen['ms_per_step'] / full['ms_per_step']:.2f}x" if seen else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return []
    return [
        "",
        "## What the loss costs",
        "",
        "Whole step with the full softmax, the encoder alone, their difference (the loss over",
        "the catalogue, its backward and the item-table update), and the whole step with the",
        "sampled softmax (256 negatives); and the full-softmax step with the learned",
        "seen-item offset (`--seen_item_bias`), as a ratio to the step without it; ms per step.",
        "",
        "| model | L | step, full softmax | encoder | loss part | step, sampled | saving "
        "| step, seen offset | offset cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
    ]


def write_markdown(rows, path):
    """Writes ``markdown_report(rows)`` to ``path`` (creating the folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_report(rows))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.child:
        run_child(FLAGS.child, FLAGS.child_result)
        return
    if FLAGS.from_json:
        with open(FLAGS.from_json, encoding="utf-8") as f:
            rows = json.load(f)
    else:
        rows = run_benchmark()
        print(f"rows: {FLAGS.output}")
    write_markdown(rows, FLAGS.markdown)
    print(f"tables: {FLAGS.markdown}")


if __name__ == "__main__":
    app.run(main)
