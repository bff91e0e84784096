"""Does the gate choose? LinRec, FMLP and the hybrid on users of two known regimes.

Generates ``hybrid_tfrs.data.regimes`` users (periodic playlists and
anchor -> partner episodes), writes them as a TSV file, trains each model on it
with ``trainers/train.py --data_file`` (each run in its own process), then
reports test NDCG@10 (``full``) per regime and model, and the hybrid's mean
alpha (LinRec's weight) per regime.

    python benchmarks/gate_regimes.py --work_dir=/tmp/regimes \
        --output=benchmarks/results/gate_regimes.md
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("work_dir", "runs/gate_regimes", "Where the data file and runs go.")
flags.DEFINE_list("models", ["linrec", "fmlp", "hybrid"], "Encoders to train.")
flags.DEFINE_integer("users", 2000, "Generated users (half of each regime).")
flags.DEFINE_integer("length", 40, "Items a user.")
flags.DEFINE_integer("period", 4, "Playlist length of the periodic users.")
flags.DEFINE_integer("max_gap", 8, "Most fillers inside an episode.")
flags.DEFINE_list(
    "train_flags",
    [
        "max_len=40",
        "hidden_dim=32",
        "num_layers=2",
        "dropout=0.1",
        "learning_rate=0.003",
        "batch_size=64",
        "epochs=30",
        "patience=5",
        "protocols=full",
    ],
    "Flags of every training run (name=value).",
)
flags.DEFINE_list(
    "hybrid_flags",
    ["gate_mode=statistics"],
    "Extra flags of the hybrid run (default: the statistics gate, the per-user gate put to "
    "the test here; the trainer's default is one alpha for everyone).",
)
flags.DEFINE_integer("seed", 0, "Seed of the data and the runs.")
flags.DEFINE_string("output", None, "Markdown file to write (a .json beside it).")
FLAGS = flags.FLAGS


def write_data(path):
    from hybrid_tfrs.data.regimes import generate_regimes

    users = generate_regimes(
        FLAGS.users, FLAGS.length, FLAGS.period, max_gap=FLAGS.max_gap, seed=FLAGS.seed
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("user_id\titem_id\ttimestamp\n")
        for user, items in users:
            handle.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items))


def train(model, data_file, output_dir):
    extra = FLAGS.hybrid_flags if model == "hybrid" else []
    command = [
        sys.executable,
        os.path.join(REPO, "trainers", "train.py"),
        f"--data_file={data_file}",
        f"--model={model}",
        f"--seed={FLAGS.seed}",
        f"--output_dir={output_dir}",
        *(f"--{flag}" for flag in FLAGS.train_flags + extra),
    ]
    print(" ".join(command[1:]), flush=True)
    with open(os.path.join(os.path.dirname(output_dir), f"{model}.log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return command


def per_regime(output_dir):
    """{regime: {"ndcg10": float, "alpha": float or None, "users": int}} on the test split."""
    import numpy as np

    from hybrid_tfrs import run_dir as runs
    from hybrid_tfrs.data.regimes import REGIMES, regime_of
    from hybrid_tfrs.evaluation import metrics_from_ranks
    from hybrid_tfrs.run_data import load_split
    from hybrid_tfrs.training import load_run_model, split_ranks

    config = runs.read_config(output_dir)
    _, split = load_split(config)
    model = load_run_model(os.path.join(output_dir, runs.BEST_MODEL_FILE))
    ranks, alpha = split_ranks(model, split, "test", config.max_len, protocols=("full",))
    regimes = np.array([regime_of(user) for user in split.user_ids])
    result = {}
    for regime in REGIMES:
        members = regimes == regime
        result[regime] = {
            "users": int(members.sum()),
            "ndcg10": metrics_from_ranks(ranks["full"][members])["NDCG@10"],
            "alpha": float(alpha[members].mean()) if alpha is not None else None,
        }
    metrics = runs.read_json(os.path.join(output_dir, "metrics.json"))
    result["best_epoch"] = metrics["best_epoch"]
    result["epochs"] = metrics["epochs_trained"]
    return result


def markdown(results, commands):
    lines = [
        "| model | periodic NDCG@10 | episodic NDCG@10 | alpha periodic | alpha episodic "
        "| best epoch / epochs |",
        "|---|---|---|---|---|---|",
    ]
    for model, r in results.items():
        alphas = [r[g]["alpha"] for g in ("periodic", "episodic")]
        cells = ["-" if a is None else f"{a:.3f}" for a in alphas]
        lines.append(
            f"| {model} | {r['periodic']['ndcg10']:.4f} | {r['episodic']['ndcg10']:.4f} | "
            f"{cells[0]} | {cells[1]} | {r['best_epoch']} / {r['epochs']} |"
        )
    runs = [" ".join(["python", os.path.relpath(c[1], REPO), *c[2:]]) for c in commands]
    lines += ["", "Runs:", "", "```"] + runs + ["```"]
    return "\n".join(lines) + "\n"


def main(_):
    from hybrid_tfrs.cli.common import quiet_tensorflow

    quiet_tensorflow()
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    data_file = os.path.join(FLAGS.work_dir, "regimes.tsv")
    write_data(data_file)
    commands, results = [], {}
    for model in FLAGS.models:
        output_dir = os.path.join(FLAGS.work_dir, model)
        commands.append(train(model, data_file, output_dir))
        results[model] = per_regime(output_dir)
        print(model, json.dumps(results[model]), flush=True)
    page = markdown(results, commands)
    print(page)
    if FLAGS.output:
        flag_names = ("work_dir", "users", "length", "period", "max_gap", "seed")
        given = [f"--{f}={getattr(FLAGS, f)}" for f in flag_names]
        given.append(f"--train_flags={','.join(FLAGS.train_flags)}")
        if FLAGS.hybrid_flags:
            given.append(f"--hybrid_flags={','.join(FLAGS.hybrid_flags)}")
        header = f"# Gate regimes\n\n`python benchmarks/gate_regimes.py {' '.join(given)}`\n\n"
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            handle.write(header + page)
        with open(os.path.splitext(FLAGS.output)[0] + ".json", "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    app.run(main)
