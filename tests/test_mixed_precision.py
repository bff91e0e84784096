"""Training under a mixed dtype policy (``--dtype_policy``): 16-bit layers on float32
weights, the loss and every score in float32, and a run that saves, resumes and
scores as a float32 one does."""

import warnings

import keras
import numpy as np
import pytest

from hybrid_tfrs import build_encoder
from hybrid_tfrs.config import GATE_FEATURE_GROUPS
from hybrid_tfrs.retrieval import SequentialRetrievalModel
from hybrid_tfrs.run_dir import RunDirError
from hybrid_tfrs.training import TrainConfig, load_run_model, train

SMALL = dict(
    synthetic_users=300,
    synthetic_items=120,
    max_len=20,
    hidden_dim=16,
    num_layers=1,
    batch_size=64,
    learning_rate=3e-3,
    protocols="full",
    patience=10,
)


def _train(tmp_path, policy, epochs):
    config = TrainConfig(dtype_policy=policy, epochs=epochs, output_dir=str(tmp_path), **SMALL)
    return train(config, log=lambda *_: None)


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("float32"), "float32", 4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_run_learns_as_a_float32_one_and_leaves_the_global_policy(
    tmp_path, policy, float32_run
):
    metrics = _train(tmp_path, policy, 4)
    assert keras.config.dtype_policy().name == "float32"
    losses = [row["loss"] for row in metrics["history"]]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    # Same data, seed and steps: 16-bit rounding moves the result, not the learning.
    mixed, exact = metrics["test"]["full"]["NDCG@10"], float32_run["test"]["full"]["NDCG@10"]
    assert mixed == pytest.approx(exact, abs=0.03)
    model = load_run_model(str(tmp_path / "model.keras"))
    assert model.encoder.dtype_policy.name == policy
    assert model.encoder.item_embeddings.dtype == "float32"  # weights stay float32
    ids = np.array([[3, 7, 9, 0, 0], [5, 0, 0, 0, 0]], "int32")
    hidden = model.encoder(ids)
    assert keras.backend.standardize_dtype(hidden.dtype) == policy.removeprefix("mixed_")
    query = model.query_embedding(ids)
    assert keras.backend.standardize_dtype(query.dtype) == "float32"
    _, scores = model.recommend(ids, k=5)
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"


def test_a_float16_run_resumes_with_its_loss_scale_and_refuses_another_policy(tmp_path):
    _train(tmp_path, "mixed_float16", 2)
    state = load_run_model(str(tmp_path / "checkpoints" / "last-2.keras"))
    assert isinstance(state.optimizer, keras.optimizers.LossScaleOptimizer)
    # no step was skipped as non-finite (each would have halved the scale)
    assert float(state.optimizer.dynamic_scale) == state.optimizer.initial_scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. Keras skipping an optimizer
        resumed = _train(tmp_path, "mixed_float16", 3)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3]
    assert np.isfinite(resumed["history"][-1]["loss"])
    after = load_run_model(str(tmp_path / "checkpoints" / "last-3.keras")).optimizer
    assert len(after.variables) == len(state.optimizer.variables)  # its scale kept, not added
    assert int(after.iterations) > int(state.optimizer.iterations)
    with pytest.raises(RunDirError, match="--dtype_policy='mixed_float16' there, 'float32' now"):
        _train(tmp_path, "float32", 4)


def test_an_unknown_policy_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--dtype_policy='float16': must be one of"):
        _train(tmp_path, "float16", 1)


ENCODERS = {
    "hybrid": dict(kind="hybrid"),
    "hybrid-statistics-all-features": dict(
        kind="hybrid",
        gate_mode="statistics",
        gate_features=GATE_FEATURE_GROUPS,
    ),
    "hybrid-hidden-vector-blend-norm": dict(
        kind="hybrid", gate_mode="statistics_hidden", gate_output="vector", fusion="blend_norm"
    ),
    "hybrid-layer-fusion": dict(kind="hybrid", gate_mode="statistics", fusion="layer"),
    "hybrid-trunk": dict(kind="hybrid", num_layers=3, shared_blocks=2),
    "hybrid-hidden-state-shared-ffn": dict(kind="hybrid", gate_mode="hidden_state", share_ffn=True),
    "hybrid-fixed": dict(kind="hybrid", gate_mode="fixed"),
    "fmlp": dict(kind="fmlp"),
    "linrec": dict(kind="linrec"),
    "sasrec": dict(kind="sasrec"),
    "sasrec-pre-ln": dict(kind="sasrec", normalize_first=True),
}


NUM_ITEMS = 500
LARGE_COUNTS = np.arange(NUM_ITEMS + 1) * 300  # item counts up to 150,000: past float16's 65504


def _encoder(name, **overrides):
    settings = dict(num_items=NUM_ITEMS, max_len=40, hidden_dim=32, num_layers=2) | ENCODERS[name]
    return build_encoder(settings.pop("kind"), **(settings | overrides))


def _histories(rng, lengths, max_len=40):
    ids = np.zeros((len(lengths), max_len), "int32")
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, NUM_ITEMS + 1, length)
    return ids


def _next_items(ids):
    """The targets of ``ids`` [B, L]: each position's next item (0 after the last)."""
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    return targets


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_encoder_computes_in_float16_close_to_float32(name):
    """Same weights, histories of 1 to 40 items in a window of 40: the 16-bit outputs
    follow float32's to about float16's precision after a few layers (no overflow)."""
    ids = _histories(np.random.default_rng(0), [1, 3, 10, 25, 39, 40])
    keras.utils.set_random_seed(0)
    exact = _encoder(name)
    exact.set_item_popularity(LARGE_COUNTS)
    expected = np.asarray(exact(ids))
    mixed = _encoder(name, dtype="mixed_float16")
    assert {layer.dtype_policy.name for layer in mixed._flatten_layers()} == {"mixed_float16"}
    mixed.set_weights(exact.get_weights())
    out = mixed(ids)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    out = np.asarray(out, "float32")
    assert np.isfinite(out).all()
    error = np.abs(out - expected)[ids > 0]  # outputs of LayerNorm, about unit scale
    assert error.mean() < 5e-3 and error.max() < 0.1, (error.mean(), error.max())


# One of each backward path (both branches, every gate input, the blend inside the
# layers, attention); the rest are made of these (each case costs a traced fit).
TRAINED_UNDER_FLOAT16 = [
    "hybrid",
    "hybrid-statistics-all-features",
    "hybrid-hidden-vector-blend-norm",
    "hybrid-layer-fusion",
    "sasrec",
]


@pytest.mark.parametrize("name", TRAINED_UNDER_FLOAT16)
def test_no_training_step_overflows_float16(name):
    """Keras skips a step whose float16 gradients are not finite and halves the loss
    scale: over 12 steps on histories of every length, none is skipped."""
    rng = np.random.default_rng(1)
    ids = _histories(rng, rng.integers(1, 41, 12 * 16))
    targets = _next_items(ids)
    model = SequentialRetrievalModel(_encoder(name, dtype="mixed_float16"), dtype="mixed_float16")
    model.set_item_popularity(LARGE_COUNTS)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(ids, targets, batch_size=16, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 12
    assert float(model.optimizer.dynamic_scale) == model.optimizer.initial_scale


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "bce"])
def test_the_loss_and_the_scores_are_float32_under_float16(loss):
    encoder = build_encoder(
        "hybrid", num_items=50, max_len=8, hidden_dim=16, num_layers=1, dtype="mixed_float16"
    )
    model = SequentialRetrievalModel(
        encoder, loss=loss, num_negatives=8, seen_item_bias=True, dtype="mixed_float16"
    )
    ids = np.arange(1, 17, dtype="int32").reshape(2, 8)
    assert keras.backend.standardize_dtype(model(ids).dtype) == "float16"
    value = model.compute_loss(ids, np.roll(ids, -1, axis=1), model(ids))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert np.isfinite(float(value))
    scores = model.score_items(ids)  # the seen-item offset added in float32 too
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_the_multi_worker_loop_steps_as_fit_does(policy):
    """``multi_worker_fit`` (the loop MultiWorkerMirroredStrategy trains with) scales the
    loss as ``fit`` does, so a LossScaleOptimizer's unscaling gives the same step, and
    passes the inputs the seen-item offset reads. Under the default strategy only: the
    cross-worker runs are tests/test_distribution.py's."""
    import tensorflow as tf

    from hybrid_tfrs.distribution import multi_worker_fit

    ids = _histories(np.random.default_rng(2), [5, 12, 40, 33] * 8)
    targets = _next_items(ids)
    models = []
    for _ in range(3):  # fit, the loop, and the initial weights
        keras.utils.set_random_seed(0)
        encoder = _encoder("hybrid", dtype=policy, dropout_rate=0.0)
        model = SequentialRetrievalModel(encoder, seen_item_bias=True, dtype=policy)
        model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)  # as the loop
        models.append(model)
    models[0].fit(ids, targets, batch_size=32, epochs=1, shuffle=False, verbose=0)
    batches = tf.data.Dataset.from_tensor_slices((ids, targets)).batch(32)
    multi_worker_fit(models[1], batches, epochs=1)
    fitted, looped, initial = ([np.asarray(v) for v in m.trainable_variables] for m in models)
    moved = max(np.abs(a - b).max() for a, b in zip(fitted, initial))
    assert moved > 1e-2  # the steps are not too small to tell apart
    for a, b in zip(looped, fitted):
        np.testing.assert_allclose(a, b, atol=1e-4)
