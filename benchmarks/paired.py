"""Paired test of a model's runs against a baseline's, user by user (hybrid_tfrs.significance).

    python benchmarks/paired.py \
        --runs=runs/accuracy/beauty/hybrid/seed0,runs/accuracy/beauty/hybrid/seed1 \
        --baseline=runs/accuracy/beauty/fmlp/seed0,runs/accuracy/beauty/fmlp/seed1

Reads each run folder's test_ranks.npz (written at the end of training;
``hybrid-tfrs-evaluate --run_dir=DIR --splits=test --write_ranks`` writes it for
a run trained before), checks that every run ranked the same test users in the
same order, averages the per-user metric over each side's runs (seeds), and
prints one markdown row per protocol: both means, the margin, its 95% bootstrap
interval (users resampled) and the bootstrap and Wilcoxon signed-rank p-values;
with two runs or more a side, also Welch's t-test on the runs' own means (the
seeds' test: would another seed show the margin?).
benchmarks/accuracy.py puts the same table on its page for the hybrid against
every other model.
"""

import os
import sys

from absl import app, flags

from hybrid_tfrs.run_dir import TEST_RANKS_FILE
from hybrid_tfrs.significance import check_same_users, paired_test, read_ranks, stack_runs

PROTOCOLS = ("full", "full-unseen")
FLAGS = flags.FLAGS


def load_runs(run_dirs, flag):
    """[UserRanks] of the run folders; ValueError naming ``flag`` and the fix if one is missing."""
    if not run_dirs:
        raise ValueError(f"--{flag}: name at least one run folder")
    runs = []
    for run_dir in run_dirs:
        path = os.path.join(run_dir, TEST_RANKS_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"--{flag}: {path} not found; write it with "
                f"hybrid-tfrs-evaluate --run_dir={run_dir} --splits=test --write_ranks"
            )
        runs.append(read_ranks(path))
    return runs


def compare(runs, baseline, protocols=PROTOCOLS, metric="NDCG@10", num_bootstrap=10000, seed=0):
    """One :func:`paired_test` result (+ "protocol") per protocol: ``runs`` minus ``baseline``."""
    check_same_users(runs[0].user_ids, baseline[0].user_ids, runs[0].path, baseline[0].path)
    return [
        {
            "protocol": protocol,
            **paired_test(
                stack_runs(runs, protocol),
                stack_runs(baseline, protocol),
                metric=metric,
                num_bootstrap=num_bootstrap,
                seed=seed,
            ),
        }
        for protocol in protocols
    ]


def _p_value(p):
    return f"{p:.3f}" if p >= 0.001 else ("< 1e-300" if p == 0 else f"{p:.1e}")


def table(results, name="model", baseline="baseline"):
    """Markdown lines: one row per result of :func:`compare`."""
    metric = results[0]["metric"]
    header = [
        "protocol", name, baseline, "users", "runs (seeds)", f"{name} {metric}",
        f"{baseline} {metric}",
        "margin", "95% CI of margin", "p (bootstrap)", "p (Wilcoxon)", "p (seeds, Welch)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [
            r["protocol"], r.get("name", name), r.get("baseline", baseline), f"{r['users']:,}",
            r.get("seeds", f"{r['runs_a']} / {r['runs_b']}"), f"{r['mean_a']:.4f}",
            f"{r['mean_b']:.4f}",
            f"{r['difference']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
            _p_value(r["p_bootstrap"]), _p_value(r["p_wilcoxon"]),
            "-" if r.get("p_seeds") is None else _p_value(r["p_seeds"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        runs, baseline = load_runs(FLAGS.runs, "runs"), load_runs(FLAGS.baseline, "baseline")
        results = compare(
            runs, baseline, FLAGS.protocols, FLAGS.metric, FLAGS.num_bootstrap, FLAGS.seed
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    text = "\n".join(table(results, "runs", "baseline"))
    text += (
        f"\n\n{results[0]['users']:,} test users; the per-user {FLAGS.metric} is averaged over "
        f"each side's runs (seeds) before the test; {FLAGS.num_bootstrap} bootstrap resamples "
        f"of the users (seed {FLAGS.seed}); p (seeds, Welch): Welch's t-test on each run's "
        "mean, with two runs or more a side; p-values two-sided, not corrected for multiple "
        "comparisons.\n"
    )
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    # Defined here, not on import: benchmarks/accuracy.py imports compare and table.
    flags.DEFINE_list("runs", [], "Run folders of the model (its seeds), comma-separated.")
    flags.DEFINE_list("baseline", [], "Run folders of the baseline (its seeds).")
    flags.DEFINE_list("protocols", list(PROTOCOLS), "Protocols to compare.")
    flags.DEFINE_string("metric", "NDCG@10", "Per-user metric: HR@k, NDCG@k, MRR or MRR@10.")
    flags.DEFINE_integer("num_bootstrap", 10000, "Bootstrap resamples of the users.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resampling.")
    flags.DEFINE_string("output", None, "Also write the table to this markdown file.")
    app.run(main)
