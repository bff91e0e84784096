"""Beauty through hybrid-tfrs-preprocess + --prepared_dir against the in-memory paths.

    python benchmarks/preprocess_beauty.py --data_dir=../shared/data --epochs=2

Writes Beauty.txt (S3-Rec: a user's items in time order) as a CSV event log
(timestamp = position), prepares it with the Beam pipeline, and checks:

1. the split: every user's train / valid / test items are the same read from
   the shards, from the CSV in memory (--data_file) and from --dataset=beauty;
2. training: --prepared_dir (streamed) against the in-memory pipeline on the
   same users in the same (shard) order: equal metrics expected; and
   --data_file (users in file order): equal up to the shuffle order.

Appends the metrics to benchmarks/results/preprocess.md.
"""

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_string("data_dir", "../shared/data", "Folder holding Beauty.txt.")
flags.DEFINE_string("work_dir", "/tmp/preprocess_beauty", "Where the CSV, shards and runs go.")
flags.DEFINE_integer("epochs", 2, "Epochs of each training run (beauty_hybrid flagfile).")
flags.DEFINE_string("output", "benchmarks/results/preprocess.md", "Results page (appended).")
FLAGS = flags.FLAGS
TRAIN_FLAGS = ["--config=beauty_hybrid", "--protocols=full"]


def _raw_users(split, vocabulary):
    decode = vocabulary.decode
    return {
        user: (tuple(decode(train)), decode([valid])[0], decode([test])[0])
        for user, train, valid, test in zip(
            split.user_ids, split.train, split.valid_targets, split.test_targets
        )
    }


def _train_cli(output_dir, *args):
    command = [
        sys.executable,
        "-m",
        "hybrid_tfrs.cli.train",
        *TRAIN_FLAGS,
        *args,
        f"--epochs={FLAGS.epochs}",
        f"--output_dir={output_dir}",
        "--noresume",
    ]
    # --config sets --dataset=beauty; the own-data runs drop it.
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f)


def main(argv):
    from hybrid_tfrs.data import load_dataset, read_s3rec
    from hybrid_tfrs.data.own import load_table_split
    from hybrid_tfrs.data.prepared import load_prepared

    os.makedirs(FLAGS.work_dir, exist_ok=True)
    csv_path = os.path.join(FLAGS.work_dir, "beauty.csv")
    with open(csv_path, "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for user, items in read_s3rec(os.path.join(FLAGS.data_dir, "Beauty.txt")):
            f.writelines(f"{user},{item},{t}\n" for t, item in enumerate(items))
    prepared_dir = os.path.join(FLAGS.work_dir, "prepared")
    shutil.rmtree(prepared_dir, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_tfrs.cli.preprocess",
            f"--input={csv_path}",
            f"--output_dir={prepared_dir}",
            "--num_shards=4",
        ],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    preprocess_minutes = (time.perf_counter() - started) / 60

    from hybrid_tfrs.data.prepared_pipeline import read_split

    prepared = load_prepared(prepared_dir)
    shards = _raw_users(read_split(prepared), prepared.vocabulary)
    own_data, own_split = load_table_split(csv_path, "user_id", "item_id", "timestamp")
    named_data, named_split = load_dataset("beauty", FLAGS.data_dir)
    same_split = (
        shards
        == _raw_users(own_split, own_data.vocabulary)
        == _raw_users(named_split, named_data.vocabulary)
    )
    same_vocabulary = prepared.vocabulary == own_data.vocabulary

    runs = os.path.join(FLAGS.work_dir, "runs")
    streamed = _train_cli(
        os.path.join(runs, "prepared"), f"--prepared_dir={prepared_dir}", "--dataset=own"
    )
    in_memory = _in_memory_same_order(prepared, os.path.join(runs, "memory_shard_order"))
    data_file = _train_cli(
        os.path.join(runs, "data_file"), f"--data_file={csv_path}", "--dataset=own"
    )
    named = _train_cli(os.path.join(runs, "beauty"), f"--data_dir={FLAGS.data_dir}")

    def ndcg(metrics):
        return metrics["test"]["full"]["NDCG@10"]

    lines = [
        "\n## Beauty: preprocess + --prepared_dir against the in-memory paths",
        "",
        f"`python benchmarks/preprocess_beauty.py --data_dir={FLAGS.data_dir} "
        f"--epochs={FLAGS.epochs}` (beauty_hybrid flagfile, {FLAGS.epochs} epochs, "
        f"load average {os.getloadavg()[0]:.2f}); preprocess: {preprocess_minutes:.1f} minutes.",
        "",
        f"- Every user's train/valid/test items equal across shards, --data_file and "
        f"--dataset=beauty: **{same_split}**; the shards' vocabulary equals --data_file's "
        f"(by frequency): **{same_vocabulary}** (--dataset=beauty numbers items by first "
        "appearance).",
        "",
        "| run | users in | test full NDCG@10 | HR@10 | final loss |",
        "|---|---|---|---|---|",
    ]
    for name, order, metrics in [
        ("--prepared_dir (streamed)", "shard order", streamed),
        ("in memory, same users and order", "shard order", in_memory),
        ("--data_file", "file order", data_file),
        ("--dataset=beauty", "file order, items by first appearance", named),
    ]:
        lines.append(
            f"| {name} | {order} | {ndcg(metrics):.5f} | "
            f"{metrics['test']['full']['HR@10']:.5f} | {metrics['history'][-1]['loss']:.5f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(REPO, FLAGS.output), "a") as f:
        f.write(text)


def _in_memory_same_order(prepared, output_dir):
    """train() on the shards' users read into memory: the in-memory batches, shard order."""
    import dataclasses

    from hybrid_tfrs.cli.config import flagfile_path
    from hybrid_tfrs.config import TrainConfig

    settings = {}
    with open(flagfile_path("beauty_hybrid")) as f:
        for line in f:
            if line.startswith("--"):
                name, value = line.strip()[2:].split("=", 1)
                settings[name] = value
    types = {field.name: type(field.default) for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{name: types[name](value) for name, value in settings.items()})
    config = dataclasses.replace(
        config,
        dataset="own",
        data_file="(in memory)",
        protocols="full",
        epochs=FLAGS.epochs,
        output_dir=output_dir,
        resume=False,
    )
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from hybrid_tfrs.data.prepared_pipeline import read_split
    from hybrid_tfrs.training import train

    return train(config, dataset=(prepared, read_split(prepared)))


if __name__ == "__main__":
    app.run(main)
