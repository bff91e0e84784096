"""The retrieval model: losses against numpy, top-k, learning a real pattern."""

import keras
import numpy as np
import pytest
from conftest import full_ndcg_at_10, most_popular_scores

from hybrid_tfrs import SequentialRetrievalModel, build_encoder, losses
from hybrid_tfrs.data import load_dataset, pad_latest, training_dataset

RNG = np.random.default_rng(2)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _loss_inputs(batch=3, length=5, dim=4, num_items=9):
    hidden = RNG.normal(size=(batch, length, dim)).astype("float32")
    table = RNG.normal(size=(num_items + 1, dim)).astype("float32")
    targets = RNG.integers(1, num_items + 1, size=(batch, length)).astype("int32")
    targets[0, 3:] = 0
    return hidden, table, targets


def test_full_softmax_loss_matches_numpy():
    hidden, table, targets = _loss_inputs()
    logits = hidden @ table[1:].T  # item 0 is never a class
    log_probs = _log_softmax(logits)
    valid = targets > 0
    expected = -np.take_along_axis(log_probs, np.maximum(targets - 1, 0)[..., None], -1)[..., 0]
    expected = expected[valid].mean()
    got = float(losses.full_softmax_loss(hidden, table, targets))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("loss", ["full_softmax_loss", "bce_loss", "sampled_softmax_loss"])
def test_a_normalizer_turns_the_mean_over_targets_into_sum_over_normalizer(loss):
    hidden, table, targets = _loss_inputs()
    count = int((targets > 0).sum())
    kwargs = {} if loss == "full_softmax_loss" else {"seed": 1}  # the same negatives twice
    mean = float(getattr(losses, loss)(hidden, table, targets, **kwargs))
    summed = float(getattr(losses, loss)(hidden, table, targets, normalizer=4.0, **kwargs))
    np.testing.assert_allclose(summed, mean * count / 4.0, rtol=1e-5)


def test_target_normalization_weighs_each_target_alike_and_round_trips():
    encoder = build_encoder("sasrec", num_items=9, max_len=5, hidden_dim=4, num_heads=1)
    model = SequentialRetrievalModel(encoder, loss_normalization="target", targets_per_batch=6)
    hidden, _, targets = _loss_inputs(dim=4)
    per_target = float(losses.full_softmax_loss(hidden, encoder.item_embeddings, targets))
    loss = float(model.compute_loss(y=targets, y_pred=hidden))
    np.testing.assert_allclose(loss, per_target * (targets > 0).sum() / 6, rtol=1e-5)
    config = SequentialRetrievalModel.from_config(model.get_config()).get_config()
    assert (config["loss_normalization"], config["targets_per_batch"]) == ("target", 6.0)
    with pytest.raises(ValueError, match="targets_per_batch must be > 0, got 0"):
        SequentialRetrievalModel(encoder, loss_normalization="target", targets_per_batch=0)
    scorer = SequentialRetrievalModel(encoder, loss_normalization="target")  # scores, no count
    assert np.asarray(scorer.score_items(np.ones((2, 5), "int32"))).shape == (2, 10)
    with pytest.raises(ValueError, match="needs targets_per_batch .* to train"):
        scorer.compute_loss(y=targets, y_pred=hidden)
    with pytest.raises(ValueError, match="loss_normalization must be one of"):
        SequentialRetrievalModel(encoder, loss_normalization="mean")


def _hybrid(**kwargs):
    return build_encoder(
        "hybrid", num_items=9, max_len=5, hidden_dim=4, num_heads=1, dropout_rate=0.0, **kwargs
    )


def test_branch_loss_adds_each_branch_as_a_query_of_its_own_and_round_trips():
    model = SequentialRetrievalModel(_hybrid(), branch_loss_weight=0.3)
    _, _, targets = _loss_inputs(dim=4)
    ids = RNG.integers(1, 10, size=targets.shape).astype("int32")
    outputs = model(ids, training=True)
    assert sorted(outputs) == ["fmlp", "hidden", "linrec"]
    table = model.encoder.item_embeddings
    branches = model.encoder(ids, training=False, return_branches=True)
    expected = sum(
        weight * float(losses.full_softmax_loss(branches[name], table, targets))
        for name, weight in (("hidden", 1.0), ("linrec", 0.3), ("fmlp", 0.3))
    )
    got = float(model.compute_loss(y=targets, y_pred=outputs))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(  # inference still returns the blend alone
        keras.ops.convert_to_numpy(model(ids)), keras.ops.convert_to_numpy(branches["hidden"])
    )
    config = SequentialRetrievalModel.from_config(model.get_config()).get_config()
    assert config["branch_loss_weight"] == 0.3
    with pytest.raises(ValueError, match="needs a hybrid encoder"):
        SequentialRetrievalModel(
            build_encoder("fmlp", num_items=9, max_len=5, hidden_dim=4), branch_loss_weight=0.3
        )
    with pytest.raises(ValueError, match="must be >= 0"):
        SequentialRetrievalModel(_hybrid(), branch_loss_weight=-1.0)
    layer_fusion = build_encoder("hybrid", num_items=9, max_len=5, hidden_dim=4, fusion="layer")
    with pytest.raises(ValueError, match="fusion='layer' blends inside each layer"):
        SequentialRetrievalModel(layer_fusion, branch_loss_weight=0.3)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_branch_loss_trains_the_branch_a_closed_gate_starves(weight):
    """With alpha pinned near 0 the LinRec branch gets gradient only from its own loss."""
    import tensorflow as tf

    model = SequentialRetrievalModel(_hybrid(), branch_loss_weight=weight)
    gate = model.encoder.gate
    gate.alpha_logit.assign(np.full(gate.alpha_logit.shape, -30.0, "float32"))  # alpha ~ 1e-13
    _, _, targets = _loss_inputs(dim=4)
    ids = RNG.integers(1, 10, size=targets.shape).astype("int32")
    linrec_weights = [w for w in model.trainable_weights if "linrec_block" in w.path]
    assert linrec_weights
    with tf.GradientTape() as tape:
        loss = model.compute_loss(y=targets, y_pred=model(ids, training=True))
    gradients = tape.gradient(loss, linrec_weights)
    largest = max(float(tf.reduce_max(tf.abs(g))) for g in gradients if g is not None)
    if weight:
        assert largest > 1e-4
    else:
        assert largest < 1e-9


def test_sampled_softmax_with_all_items_as_uniform_negatives_approaches_full_softmax():
    hidden, table, targets = _loss_inputs(num_items=9)
    seed = keras.random.SeedGenerator(0)
    # Many uniform negatives with logQ correction estimate the full softmax.
    sampled = np.mean(
        [
            float(
                losses.sampled_softmax_loss(
                    hidden, table, targets, num_negatives=400, sampler="uniform", seed=seed
                )
            )
            for _ in range(5)
        ]
    )
    full = float(losses.full_softmax_loss(hidden, table, targets))
    assert abs(sampled - full) < 0.1 * full


def test_accidental_hits_are_removed():
    hidden, table, targets = _loss_inputs()
    targets[:] = 3  # every negative drawn in-batch is the target itself
    loss = float(
        losses.sampled_softmax_loss(
            hidden, table, targets, num_negatives=16, sampler="in-batch", seed=1
        )
    )
    assert loss == pytest.approx(0.0, abs=1e-5)
    kept = float(
        losses.sampled_softmax_loss(
            hidden,
            table,
            targets,
            num_negatives=16,
            sampler="in-batch",
            remove_accidental_hits=False,
            seed=1,
        )
    )
    # 16 copies of the positive, each down-weighted by logQ = log(16 expected draws).
    assert kept == pytest.approx(np.log(2.0), rel=1e-5)


def test_bce_loss_matches_numpy_for_the_drawn_negatives():
    hidden, table, targets = _loss_inputs()
    seed = keras.random.SeedGenerator(5)
    got = float(losses.bce_loss(hidden, table, targets, seed=seed))
    negatives = np.asarray(
        keras.random.randint((targets.size,), 1, table.shape[0], seed=keras.random.SeedGenerator(5))
    ).reshape(targets.shape)
    softplus = lambda z: np.log1p(np.exp(z))  # noqa: E731
    pos = np.einsum("bld,bld->bl", hidden, table[targets])
    neg = np.einsum("bld,bld->bl", hidden, table[negatives])
    per = softplus(-pos) + (negatives != targets) * softplus(neg)
    np.testing.assert_allclose(got, per[targets > 0].mean(), rtol=1e-5)


def test_recommend_returns_best_items_and_can_exclude_history():
    model = SequentialRetrievalModel(build_encoder("linrec", num_items=30, max_len=8))
    ids = RNG.integers(1, 31, size=(4, 8)).astype("int32")
    ids[1, 3:] = 0
    scores = np.asarray(model.score_items(ids))
    top_ids, top_scores = model.recommend(ids, k=5)
    top_ids, top_scores = np.asarray(top_ids), np.asarray(top_scores)
    assert top_ids.shape == (4, 5) and (top_ids > 0).all()
    np.testing.assert_array_equal(top_ids, np.argsort(-scores, axis=1)[:, :5])
    assert np.all(np.diff(top_scores, axis=1) <= 0)
    excluded, _ = model.recommend(ids, k=5, exclude_history=True)
    for row, hist in zip(np.asarray(excluded), ids, strict=True):
        assert not set(row) & set(hist[hist > 0])
    with pytest.raises(ValueError, match="k must be in 1..30"):
        model.recommend(ids, k=31)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model.recommend(np.ones((1, 9), "int32"), k=3)


def test_retrieval_model_learns_synthetic_sequences_far_better_than_baselines():
    data, split = load_dataset("synthetic", num_users=600, num_items=150, seed=3)
    max_len = 50
    model = SequentialRetrievalModel(
        build_encoder("hybrid", num_items=split.num_items, max_len=max_len, hidden_dim=32),
        seed=0,
    )
    model.set_item_popularity(split.item_popularity)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(
        training_dataset(split.train, max_len, batch_size=64, seed=0),
        epochs=6,
        shuffle=False,
        verbose=0,
    )

    histories = pad_latest(split.valid_histories, max_len)

    def scored(score_matrix):
        return full_ndcg_at_10(score_matrix, split, histories, split.valid_targets)

    model_ndcg = scored(lambda h: np.asarray(model.score_items(h)))
    popular_ndcg = scored(most_popular_scores(split))
    random_ndcg = scored(lambda h: RNG.random((len(h), split.num_items + 1)))
    assert model_ndcg > 2 * popular_ndcg and model_ndcg > 4 * random_ndcg, (
        model_ndcg,
        popular_ndcg,
        random_ndcg,
    )
