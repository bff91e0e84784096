"""--validation_protocol: the protocol whose validation NDCG@10 picks the best epoch."""

import pytest

from hybrid_tfrs.training import TrainConfig, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three epochs of the hybrid on 200 synthetic users, validated on full-unseen."""
    config = TrainConfig(
        synthetic_users=200,
        synthetic_items=300,
        max_len=20,
        hidden_dim=16,
        epochs=3,
        validation_protocol="full-unseen",
        protocols="full,full-unseen",
        output_dir=str(tmp_path_factory.mktemp("run")),
    )
    lines = []
    return train(config, log=lines.append), lines


def test_every_epoch_is_scored_under_the_protocol_and_the_best_one_kept(run):
    metrics, lines = run
    scores = [row["val_ndcg@10"] for row in metrics["history"]]
    assert len(scores) == 3
    # The kept model is the epoch with the best full-unseen score, and the final
    # evaluation of that model on the validation users gives the same number.
    assert metrics["best_epoch"] == scores.index(max(scores)) + 1
    assert metrics["valid"]["full-unseen"]["NDCG@10"] == pytest.approx(max(scores), abs=1e-6)
    # full ranks the history's items too: another number, so the test tells them apart.
    assert metrics["valid"]["full"]["NDCG@10"] != pytest.approx(max(scores), abs=1e-4)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    assert all(" - val full-unseen NDCG@10 " in line for line in epoch_lines)


def test_an_unknown_protocol_is_refused_by_flag_name():
    with pytest.raises(ValueError, match="validation_protocol.*'full', 'full-unseen'"):
        TrainConfig(validation_protocol="uniform-99").validate()


def test_a_run_cannot_resume_under_another_protocol():
    before, after = TrainConfig(), TrainConfig(validation_protocol="full-unseen")
    assert after.differences(before) == {"validation_protocol": ("full", "full-unseen")}
