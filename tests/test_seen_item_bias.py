"""The learned seen-item offset: masks, losses, training, and every scoring path agreeing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hybrid_tfrs import SequentialRetrievalModel, build_encoder, losses
from hybrid_tfrs.data import Vocabulary
from hybrid_tfrs.evaluation import target_ranks
from hybrid_tfrs.export import export_saved_model
from hybrid_tfrs.layers.seen_item_bias import (
    SeenItemBias,
    seen_in_history,
    seen_in_prefix_own,
    seen_in_prefix_shared,
)
from hybrid_tfrs.training import item_embeddings, score_function

NUM_ITEMS, MAX_LEN = 12, 6
IDS = np.array([[3, 5, 3, 7, 0, 0], [1, 2, 4, 6, 8, 9], [12, 0, 0, 0, 0, 0]], "int32")


def prefix_sets():
    """Position t's history by hand: the set of non-zero ids at positions <= t."""
    return [[set(row[: t + 1].tolist()) - {0} for t in range(len(row))] for row in IDS]


def numpy_of(tensor):
    return keras.ops.convert_to_numpy(tensor)


def test_masks_mark_exactly_the_items_of_each_prefix():
    sets = prefix_sets()
    expected = np.array(
        [[[float(c in s) for c in range(NUM_ITEMS + 1)] for s in row] for row in sets]
    )
    candidates = np.array([3, 7, 12, 11], "int32")
    np.testing.assert_array_equal(
        numpy_of(seen_in_prefix_shared(IDS, candidates)), expected[:, :, candidates]
    )
    own = np.array([[3, 3, 5, 1, 7, 7], [2, 2, 2, 6, 9, 9], [12, 12, 1, 1, 1, 1]], "int32")
    np.testing.assert_array_equal(
        numpy_of(seen_in_prefix_own(IDS, own)),
        np.take_along_axis(expected, own[:, :, None], axis=2)[:, :, 0],
    )
    history = numpy_of(seen_in_history(IDS, NUM_ITEMS + 1))
    np.testing.assert_array_equal(history, expected[:, -1, :])
    assert not history[:, 0].any()  # padding is never seen


def _inputs(seed=0, dim=4):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=IDS.shape + (dim,)).astype("float32")
    table = rng.normal(size=(NUM_ITEMS + 1, dim)).astype("float32")
    targets = np.where(IDS > 0, rng.integers(1, NUM_ITEMS + 1, size=IDS.shape), 0)
    return hidden, table, targets.astype("int32")


def _bias(value):
    layer = SeenItemBias()
    layer.bias.assign(value)
    return layer


def test_full_softmax_adds_the_offset_to_each_prefixs_items():
    hidden, table, targets = _inputs()
    bias = -1.7
    logits = hidden @ table.T
    logits[..., 0] = -np.inf
    for b, row in enumerate(prefix_sets()):
        for t, items in enumerate(row):
            logits[b, t, sorted(items)] += bias
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    expected = -picked[targets > 0].mean()
    got = float(
        losses.full_softmax_loss(hidden, table, targets, item_ids=IDS, seen_bias=_bias(bias))
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # A far-negative offset (a long-trained model) stays finite, gradient included.
    layer = _bias(-60.0)
    with tf.GradientTape() as tape:
        far = losses.full_softmax_loss(hidden, table, targets, item_ids=IDS, seen_bias=layer)
    gradient = tape.gradient(far, layer.bias)
    assert np.isfinite(float(far)) and np.isfinite(float(gradient))


@pytest.mark.parametrize("loss", ["full_softmax_loss", "sampled_softmax_loss", "bce_loss"])
def test_every_loss_applies_the_offset(loss):
    """Offset 0 changes nothing; with targets never seen before, a negative offset
    only lowers the seen negatives, so the loss falls (and rises for a positive one)."""
    hidden, table, targets = _inputs(seed=3)
    targets = np.where(IDS > 0, 11, 0).astype("int32")  # item 11 is in no history
    kwargs = {} if loss == "full_softmax_loss" else {"seed": 4}  # the same negatives each call
    if loss == "sampled_softmax_loss":
        kwargs.update(num_negatives=64, sampler="uniform")
    call = getattr(losses, loss)
    plain = float(call(hidden, table, targets, **kwargs))
    at = {
        value: float(call(hidden, table, targets, item_ids=IDS, seen_bias=_bias(value), **kwargs))
        for value in (0.0, -3.0, 3.0)
    }
    np.testing.assert_allclose(at[0.0], plain, rtol=1e-6)
    assert at[-3.0] < plain < at[3.0]


def _model(bias=None, model="sasrec", seed=0):
    keras.utils.set_random_seed(seed)
    encoder = build_encoder(
        model, num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_dim=8, num_heads=1, dropout_rate=0.0
    )
    retrieval = SequentialRetrievalModel(encoder, seen_item_bias=True)
    retrieval.set_item_popularity(np.arange(NUM_ITEMS + 1))
    if bias is not None:
        retrieval.seen_bias.bias.assign(bias)
    return retrieval


def test_training_learns_a_negative_offset_where_nothing_repeats():
    rng = np.random.default_rng(0)
    # Each row: distinct items in random order; the next item is never a seen one.
    rows = np.stack([rng.permutation(NUM_ITEMS)[: MAX_LEN + 1] + 1 for _ in range(64)])
    inputs, targets = rows[:, :-1].astype("int32"), rows[:, 1:].astype("int32")
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(inputs, targets, batch_size=16, epochs=3, verbose=0)
    assert model.seen_item_bias < -0.3


def test_scoring_paths_agree_and_the_offset_survives_save_and_load(tmp_path):
    model = _model(bias=-2.5, model="hybrid")
    histories = IDS[:, :MAX_LEN]
    query = numpy_of(model.query_embedding(histories))
    expected = query @ item_embeddings(model).T - 2.5 * numpy_of(
        seen_in_history(histories, NUM_ITEMS + 1)
    )
    expected[:, 0] = -np.inf
    np.testing.assert_allclose(numpy_of(model.score_items(histories)), expected, rtol=1e-5)

    ids, scores = model.recommend(histories, k=5, chunk_size=4)
    np.testing.assert_array_equal(
        numpy_of(ids), np.argsort(-expected, axis=1, kind="stable")[:, :5]
    )
    np.testing.assert_allclose(numpy_of(scores), -np.sort(-expected, axis=1)[:, :5], rtol=1e-5)

    targets = np.array([3, 11, 12])  # seen, unseen, seen
    ranks, _ = target_ranks(
        score_function(model),
        histories,
        targets,
        [row[row > 0] for row in histories],
        NUM_ITEMS,
        protocols=("full",),
        item_embeddings=item_embeddings(model),
    )
    target_scores = expected[np.arange(3), targets]
    by_hand = 1 + (expected[:, 1:] >= target_scores[:, None]).sum(axis=1) - 1
    np.testing.assert_array_equal(ranks["full"], by_hand)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.seen_item_bias == pytest.approx(-2.5)
    np.testing.assert_allclose(numpy_of(loaded.score_items(histories)), expected, rtol=1e-5)


def test_the_export_applies_the_offset(tmp_path):
    model = _model(bias=4.0)  # positive: the history's items rise to the top
    vocabulary = Vocabulary([f"i{i}" for i in range(1, NUM_ITEMS + 1)])
    version = export_saved_model(model, vocabulary, str(tmp_path), "sasrec", version=1, top_k=4)
    loaded = tf.saved_model.load(version)
    histories = [["i3", "i5", "i7"], ["i12"]]
    result = loaded.signatures["recommend"](
        history=tf.constant([h + [""] * (3 - len(h)) for h in histories]),
        k=tf.constant(4),
        exclude_history=tf.constant(False),
    )
    top, scores = model.recommend(np.array([[3, 5, 7], [12, 0, 0]], "int32"), k=4)
    expected = [[f"i{i}" for i in row] for row in numpy_of(top)]
    assert [[raw.decode() for raw in row] for row in result["item_ids"].numpy()] == expected
    assert {"i3", "i5", "i7"} <= set(expected[0])  # +4 lifts all three seen items
    np.testing.assert_allclose(result["scores"].numpy(), numpy_of(scores), rtol=1e-5)
    items = loaded.signatures["item_embeddings"]()
    assert float(items["seen_item_bias"]) == pytest.approx(4.0)
