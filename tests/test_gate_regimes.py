"""The gate chooses per user: on generated regimes, alpha goes to the branch the structure favours.

Periodic playlist users are solved by the frequency filter (the next item is a
fixed lag back); benchmarks/gate_regimes.py shows FMLP alone near NDCG@10 1.0
there and LinRec alone far below. A small hybrid trained on a mix of periodic
and episodic users must solve the periodic users with alpha near 0 (the
filter) and tell the two regimes apart user by user: every episodic user's
alpha above every periodic user's, bar 5 % tails. (Neither branch learns the
episodic users in so small a run, so their alpha need not be large.)
"""

import os

import numpy as np

from hybrid_tfrs import run_dir as runs
from hybrid_tfrs.data.regimes import generate_regimes, regime_of
from hybrid_tfrs.evaluation import metrics_from_ranks
from hybrid_tfrs.training import TrainConfig, load_run_model, load_split, split_ranks, train


def test_the_gate_gives_periodic_users_to_the_filter(tmp_path):
    data_file = tmp_path / "regimes.tsv"
    with open(data_file, "w", encoding="utf-8") as handle:
        handle.write("user_id\titem_id\ttimestamp\n")
        for user, items in generate_regimes(num_users=400, length=24, max_gap=4, seed=0):
            handle.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items))
    config = TrainConfig(
        data_file=str(data_file),
        dataset="own",
        model="hybrid",
        gate_mode="statistics",  # the per-user gate (the default is one alpha for everyone)
        max_len=24,
        hidden_dim=16,
        num_layers=1,
        dropout=0.0,
        learning_rate=0.01,
        batch_size=32,
        epochs=12,
        patience=12,
        protocols="full",
        output_dir=str(tmp_path / "run"),
    )
    train(config, log=lambda *args: None)
    _, split = load_split(config)
    model = load_run_model(os.path.join(config.output_dir, runs.BEST_MODEL_FILE))
    ranks, alpha = split_ranks(model, split, "test", config.max_len, protocols=("full",))
    periodic = np.array([regime_of(user) == "periodic" for user in split.user_ids])
    assert metrics_from_ranks(ranks["full"][periodic])["NDCG@10"] > 0.9
    assert alpha[periodic].mean() < 0.1
    assert np.percentile(alpha[~periodic], 5) > np.percentile(alpha[periodic], 95)
