"""Million-item catalogues: time and peak memory of training, evaluation and serving.

A synthetic catalogue of ``--num_items`` items (hidden ``--hidden_dim``) whose
item table is random but clustered (``--clusters`` centres plus noise, so an
approximate index has structure to find, as trained tables do). Each
measurement runs in a fresh subprocess, which reports its wall time and its
peak resident memory (``ru_maxrss``) beside its resident memory after the
imports and the model build (``baseline``):

    train_step       one sampled-softmax training step (256 mixed negatives,
                     logQ), batch ``--train_batch`` x ``--max_len``, Adam
                     (median of the timed steps; the first, traced, apart)
    evaluate         full-ranking evaluation (``full`` and ``full-unseen``) of
                     ``--eval_users`` users: query vectors scored against the
                     item table in chunks (hybrid_tfrs.evaluation)
    recommend        the in-memory ``SequentialRetrievalModel.recommend``,
                     top-``--k`` with the history excluded, per batch size
    export           writes the SavedModel (untimed in the table, for the next)
    savedmodel       the exported ``recommend`` signature, loaded in a fresh
                     process, per batch size
    ann              faiss IVF-Flat from the export's ``item_embeddings``:
                     build time, ms per query and recall@``--k`` against brute
                     force, for several ``nprobe``; also on a purely random
                     (unclustered) table, the worst case. Needs faiss in
                     ``--ann_python`` (skipped with a note otherwise).

Usage:
    taskset -c 1 .venv/bin/python benchmarks/catalogue.py          # 1M items
    .venv/bin/python benchmarks/catalogue.py --num_items=20000 --eval_users=500 \
        --output=/tmp/catalogue.md --json=/tmp/catalogue.json       # smoke run
    .venv/bin/python benchmarks/catalogue.py --from_json=benchmarks/results/catalogue.json

Assertion-free: the table says what was measured on this machine and its load.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

MEASUREMENTS = ("train_step", "evaluate", "recommend", "export", "savedmodel", "ann")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MEMORY_TARGET_GB = 4.0

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_items", 1_000_000, "Catalogue size N.", lower_bound=2)
flags.DEFINE_integer("hidden_dim", 64, "Embedding size d.", lower_bound=1)
flags.DEFINE_integer("clusters", 1000, "Centres of the synthetic item table.", lower_bound=1)
flags.DEFINE_string("model", "hybrid", "Encoder kind.")
flags.DEFINE_integer("max_len", 50, "History length L.", lower_bound=1)
flags.DEFINE_integer("train_batch", 64, "Sequences per training step.", lower_bound=1)
flags.DEFINE_integer("train_steps", 5, "Timed training steps.", lower_bound=1)
flags.DEFINE_integer("eval_users", 10_000, "Users of the full-ranking evaluation.", lower_bound=1)
flags.DEFINE_integer("eval_batch", 256, "Users per evaluation batch.", lower_bound=1)
flags.DEFINE_integer("k", 100, "Items per recommendation.", lower_bound=1)
flags.DEFINE_list("batches", ["1", "64"], "Request batch sizes of recommend.")
flags.DEFINE_integer("calls", 5, "Timed calls per batch size (median).", lower_bound=1)
flags.DEFINE_list("nprobes", ["16", "64", "256", "1024"], "IVF cells probed per query.")
flags.DEFINE_integer("ann_queries", 1000, "Queries of the recall check.", lower_bound=1)
flags.DEFINE_string("ann_python", sys.executable, "Python with faiss-cpu for the ann row.")
flags.DEFINE_list("measurements", list(MEASUREMENTS), "What to measure.")
flags.DEFINE_string("work_dir", None, "Where the export goes (default: a temporary folder).")
flags.DEFINE_string("output", os.path.join(RESULTS_DIR, "catalogue.md"), "Markdown table.")
flags.DEFINE_string("json", os.path.join(RESULTS_DIR, "catalogue.json"), "The rows as JSON.")
flags.DEFINE_string("from_json", None, "Only regenerate --output from this JSON file.")
flags.DEFINE_string("child", None, "Internal: the measurement of this process.")
flags.DEFINE_string("child_result", None, "Internal: where the child writes its JSON.")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    with open("/proc/self/statm", encoding="utf-8") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --------------------------------------------------------------------------- children


def clustered_table(num_items, dim, clusters, seed=0):
    """float32 [N + 1, d]: a random centre per item plus noise; row 0 zeros."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype("float32")
    table = np.empty((num_items + 1, dim), dtype="float32")
    for lo in range(1, num_items + 1, 2**18):  # in slices: no second N x d temporary
        hi = min(lo + 2**18, num_items + 1)
        table[lo:hi] = centres[rng.integers(0, clusters, hi - lo)]
        table[lo:hi] += 0.5 * rng.normal(size=(hi - lo, dim)).astype("float32")
    table[0] = 0.0
    return table * 0.05


def build_model(config, loss="softmax"):
    import numpy as np

    from hybrid_tfrs import SequentialRetrievalModel, build_encoder
    from hybrid_tfrs.backend import keras

    keras.utils.set_random_seed(0)
    encoder = build_encoder(
        config["model"],
        num_items=config["num_items"],
        max_len=config["max_len"],
        hidden_dim=config["hidden_dim"],
    )
    model = SequentialRetrievalModel(encoder, loss=loss, num_negatives=256)
    model.build((None, config["max_len"]))
    model.set_item_popularity(np.arange(config["num_items"] + 1))
    encoder.item_embeddings.assign(
        clustered_table(config["num_items"], config["hidden_dim"], config["clusters"])
    )
    return model


def random_histories(users, config, seed):
    """int32 [U, L] right-padded histories of 1..L random items."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config["num_items"] + 1, size=(users, config["max_len"]), dtype="int32")
    lengths = rng.integers(1, config["max_len"] + 1, size=users)
    ids[np.arange(config["max_len"])[None, :] >= lengths[:, None]] = 0
    return ids


def measure_train_step(config):
    import numpy as np
    import tensorflow as tf

    from hybrid_tfrs.backend import keras

    model = build_model(config, loss="sampled_softmax")
    ids = random_histories(config["train_batch"], config, seed=1)
    targets = np.where(ids > 0, np.roll(ids, -1, axis=1), 0).astype("int32")
    targets[:, -1] = 0
    variables = model.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(variables)
    baseline = current_rss_mb()

    @tf.function
    def step(ids, targets):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=ids, y=targets, y_pred=model(ids, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    ids, targets = tf.constant(ids), tf.constant(targets)
    times = []
    for _ in range(config["train_steps"] + 1):
        start = time.perf_counter()
        float(step(ids, targets))
        times.append(time.perf_counter() - start)
    return [
        {
            "what": f"sampled-softmax training step (batch {config['train_batch']} x "
            f"L {config['max_len']}, 256 negatives, Adam)",
            "seconds": statistics.median(times[1:]),
            "note": f"first (traced) step {times[0]:.2f} s",
            "baseline_mb": baseline,
        }
    ]


def measure_evaluate(config):
    import numpy as np

    from hybrid_tfrs.evaluation import SCORES_PER_CHUNK, evaluate
    from hybrid_tfrs.training import item_embeddings, score_function

    model = build_model(config)
    histories = random_histories(config["eval_users"], config, seed=2)
    targets = np.random.default_rng(3).integers(1, config["num_items"] + 1, config["eval_users"])
    user_items = [np.append(h[h > 0], t) for h, t in zip(histories, targets)]
    baseline = current_rss_mb()
    start = time.perf_counter()
    result = evaluate(
        score_function(model),
        histories,
        targets,
        user_items,
        config["num_items"],
        protocols=("full", "full-unseen"),
        batch_size=config["eval_batch"],
        progress=False,
        item_embeddings=item_embeddings(model),
    )
    seconds = time.perf_counter() - start
    chunk = max(1, SCORES_PER_CHUNK // config["eval_batch"])
    return [
        {
            "what": f"full-ranking evaluation, {config['eval_users']:,} users, "
            "protocols full + full-unseen",
            "seconds": seconds,
            "note": f"batch {config['eval_batch']} x chunk {chunk:,} items; "
            f"full NDCG@10 {result['protocols']['full']['NDCG@10']:.5f} (random model)",
            "baseline_mb": baseline,
        }
    ]


def timed_calls(call, calls):
    """(first call s, median of ``calls`` more, s)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def measure_recommend(config):
    model = build_model(config)
    baseline = current_rss_mb()
    rows = []
    for batch in config["batches"]:
        ids = random_histories(batch, config, seed=4)
        first, median = timed_calls(
            lambda ids=ids: model.recommend(ids, k=config["k"], exclude_history=True),
            config["calls"],
        )
        rows.append(
            {
                "what": f"in-memory recommend, top-{config['k']}, batch {batch}, history excluded",
                "seconds": median,
                "note": f"first call {first:.2f} s",
                "baseline_mb": baseline,
            }
        )
    return rows


def measure_export(config):
    from hybrid_tfrs.data import Vocabulary
    from hybrid_tfrs.export import export_saved_model

    model = build_model(config)
    vocabulary = Vocabulary([f"i{i}" for i in range(1, config["num_items"] + 1)])
    start = time.perf_counter()
    path = export_saved_model(
        model, vocabulary, config["work_dir"], "catalogue", version=1, top_k=config["k"]
    )
    return [
        {
            "what": "export_saved_model",
            "seconds": time.perf_counter() - start,
            "note": path,
            "baseline_mb": None,
        }
    ]


def saved_model_path(config):
    return os.path.join(config["work_dir"], "catalogue", "1")


def raw_histories(batch, config, seed):
    return [[f"i{i}" for i in row[row > 0]] for row in random_histories(batch, config, seed)]


def measure_savedmodel(config):
    import tensorflow as tf

    start = time.perf_counter()
    signature = tf.saved_model.load(saved_model_path(config)).signatures["recommend"]
    load_s = time.perf_counter() - start
    baseline = current_rss_mb()
    rows = []
    for batch in config["batches"]:
        histories = raw_histories(batch, config, seed=5)
        width = max(len(h) for h in histories)
        history = tf.constant([h + [""] * (width - len(h)) for h in histories])
        first, median = timed_calls(
            lambda history=history: signature(
                history=history, k=tf.constant(config["k"]), exclude_history=tf.constant(True)
            ),
            config["calls"],
        )
        rows.append(
            {
                "what": f"SavedModel `recommend` signature, top-{config['k']}, batch {batch}, "
                "history excluded",
                "seconds": median,
                "note": f"load {load_s:.1f} s, first call {first:.2f} s",
                "baseline_mb": baseline,
            }
        )
    return rows


def measure_ann(config):
    try:
        import faiss
    except ImportError:
        return [{"what": "faiss IVF-Flat", "skipped": "faiss is not installed in --ann_python"}]
    import numpy as np

    from hybrid_tfrs.ann import (
        ItemIndex,
        export_items,
        load_export,
        query_embeddings,
        recall_at_k,
    )
    from hybrid_tfrs.topk import chunked_top_k

    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))
    export = load_export(saved_model_path(config))
    items = export_items(export)
    queries = query_embeddings(export, raw_histories(config["ann_queries"], config, seed=6))
    del export
    baseline = current_rss_mb()
    rows = []
    for name in ("clustered table (the export's)", "unclustered random table"):
        if name.startswith("unclustered"):
            shape = items.embeddings.shape
            embeddings = np.random.default_rng(7).normal(size=shape).astype("float32")
        else:
            embeddings = items.embeddings
        table = np.concatenate([np.zeros_like(embeddings[:1]), embeddings])
        start = time.perf_counter()
        exact = [  # 100 queries at a time: the brute force's memory stays O(100 x chunk)
            np.asarray(chunked_top_k(queries[lo : lo + 100], table, config["k"])[0])
            for lo in range(0, len(queries), 100)
        ]
        exact_ms = 1000 * (time.perf_counter() - start) / len(queries)
        exact_ids = items.item_ids[np.concatenate(exact) - 1]
        del table
        start = time.perf_counter()
        index = ItemIndex.build(items.item_ids, embeddings, kind="ivf")
        build_s = time.perf_counter() - start
        del embeddings
        for nprobe in config["nprobes"]:
            index.index.nprobe = nprobe
            start = time.perf_counter()
            found, _ = index.search(queries, config["k"])
            ms = 1000 * (time.perf_counter() - start) / len(queries)
            rows.append(
                {
                    "what": f"faiss IVF-Flat ({index.index.nlist} cells, nprobe {nprobe}), {name}",
                    "seconds": ms / 1000,
                    "note": f"recall@{config['k']} {recall_at_k(found, exact_ids):.3f} "
                    f"over {len(queries)} queries; build {build_s:.1f} s; "
                    f"brute force (hybrid_tfrs.topk) {exact_ms:.1f} ms/query",
                    "baseline_mb": baseline,
                }
            )
        del index
    return rows


def run_child(name, config, result_path):
    rows = globals()[f"measure_{name}"](config)
    for row in rows:
        row["peak_mb"] = peak_rss_mb()
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(rows, f)


# --------------------------------------------------------------------------- parent


def machine():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    with open("/proc/meminfo", encoding="utf-8") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable core(s), {kib / 2**20:.1f} GiB RAM"


def load_average():
    with open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])


def run_measurement(name, config):
    """Runs one measurement in a fresh process; its rows, or one error row."""
    python = FLAGS.ann_python if name == "ann" else sys.executable
    threads = str(len(os.sched_getaffinity(0)))
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
        OMP_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
    )
    with tempfile.TemporaryDirectory(prefix="catalogue_") as tmp:
        result = os.path.join(tmp, "result.json")
        command = [
            python,
            os.path.abspath(__file__),
            f"--child={name}",
            f"--child_result={result}",
            f"--flagfile={os.path.join(tmp, 'config.flags')}",
        ]
        with open(os.path.join(tmp, "config.flags"), "w", encoding="utf-8") as f:
            f.write(f"--config_json={json.dumps(config)}\n")
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0 or not os.path.exists(result):
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return [{"what": name, "error": lines[-1] if lines else f"exit {done.returncode}"}]
        with open(result, encoding="utf-8") as f:
            rows = json.load(f)
    for row in rows:
        row["process_s"] = wall
    return rows


def markdown(report):
    """The results table of a report (``--json``) and what it implies."""
    config, rows = report["config"], report["rows"]
    items, users = config["num_items"], config["eval_users"]
    lines = [
        f"# Catalogue of {items:,} items: time and peak memory",
        "",
        f"Machine: {report['machine']}. Load average (1, 5, 15 min) at the start: "
        f"{report['load_start']}; at the end: {report['load_end']}. Hidden "
        f"{config['hidden_dim']}, {config['model']} encoder, L = {config['max_len']}; item "
        f"table clustered ({config['clusters']} centres + noise). Each measurement is a fresh "
        "process; peak = its ru_maxrss (everything: TensorFlow, the model, the item table "
        f"of {items * config['hidden_dim'] * 4 / 2**20:.0f} MiB), baseline = its resident "
        "memory before the measured work. Target: no step above "
        f"{MEMORY_TARGET_GB:g} GB.",
        "",
        f"Command: `{report['command']}`",
        "",
        "| measurement | time | peak MiB | baseline MiB | under 4 GB | notes |",
        "|---|---:|---:|---:|:---:|---|",
    ]
    for row in rows:
        if "error" in row or "skipped" in row:
            reason = row.get("error") or row.get("skipped")
            lines.append(f"| {row['what']} | - | - | - | - | {reason} |")
            continue
        seconds = row["seconds"]
        time_text = f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
        baseline = "-" if row["baseline_mb"] is None else f"{row['baseline_mb']:.0f}"
        under = "yes" if row["peak_mb"] * 2**20 < MEMORY_TARGET_GB * 1e9 else "**no**"
        lines.append(
            f"| {row['what']} | {time_text} | {row['peak_mb']:.0f} | {baseline} | {under} "
            f"| {row['note']} |"
        )
    lines += [
        "",
        "For scale: without chunking, the users x items score matrix of the evaluation "
        f"would be {users * items * 4 / 2**30:,.1f} GiB of float32, one evaluation batch's "
        f"{config['eval_batch'] * items * 4 / 2**20:,.0f} MiB (plus as much again in masks), "
        f"and a batch-{max(config['batches'])} request's "
        f"{max(config['batches']) * items * 4 / 2**20:,.0f} MiB. Chunked, the evaluation's "
        "peak above its baseline is the item table copy and a few chunk-sized arrays. "
        "The ann rows' peak holds the export, its table and a second random table at "
        "once; it is not one of the issue's steps. Recall of IVF on the clustered table is "
        "an easy case and on the unclustered random table the hardest: a trained table lies "
        "in between, so measure recall on the real export before serving from an index.",
    ]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if FLAGS.child:
        config = json.loads(FLAGS.config_json)
        run_child(FLAGS.child, config, FLAGS.child_result)
        return 0
    if FLAGS.from_json:
        with open(FLAGS.from_json, encoding="utf-8") as f:
            write_markdown(json.load(f))
        return 0
    unknown = sorted(set(FLAGS.measurements) - set(MEASUREMENTS))
    if unknown:
        raise app.UsageError(f"--measurements: unknown {unknown}; use {', '.join(MEASUREMENTS)}")
    with tempfile.TemporaryDirectory(prefix="catalogue_export_") as default_work_dir:
        config = {
            "num_items": FLAGS.num_items,
            "hidden_dim": FLAGS.hidden_dim,
            "clusters": FLAGS.clusters,
            "model": FLAGS.model,
            "max_len": FLAGS.max_len,
            "train_batch": FLAGS.train_batch,
            "train_steps": FLAGS.train_steps,
            "eval_users": FLAGS.eval_users,
            "eval_batch": FLAGS.eval_batch,
            "k": FLAGS.k,
            "batches": [int(b) for b in FLAGS.batches],
            "calls": FLAGS.calls,
            "nprobes": [int(n) for n in FLAGS.nprobes],
            "ann_queries": FLAGS.ann_queries,
            "work_dir": FLAGS.work_dir or default_work_dir,
        }
        started_load = load_average()
        rows = []
        for name in MEASUREMENTS:
            if name in FLAGS.measurements or (
                name == "export" and {"savedmodel", "ann"} & set(FLAGS.measurements)
            ):
                print(f"{name} ...", flush=True)
                new_rows = run_measurement(name, config)
                for row in new_rows:
                    print(f"  {json.dumps(row)}", flush=True)
                rows += [row for row in new_rows if row["what"] != "export_saved_model"]
    del config["work_dir"]  # a temporary path, not a setting
    report = {
        "config": config,
        "rows": rows,
        "machine": machine(),
        "load_start": started_load,
        "load_end": load_average(),
        "command": ("python benchmarks/catalogue.py " + " ".join(sys.argv[1:])).strip(),
    }
    with open(FLAGS.json, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    write_markdown(report)
    return 0


def write_markdown(report):
    text = markdown(report)
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


flags.DEFINE_string("config_json", None, "Internal: the child's configuration.")

if __name__ == "__main__":
    app.run(main)
