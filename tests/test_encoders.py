"""The four encoders: causality, padding, gradients, saving, argument errors."""

import os

import keras
import numpy as np
import pytest

from hybrid_tfrs import ENCODER_KINDS, SequentialRetrievalModel, build_encoder
from hybrid_tfrs.config import DEFAULT_GATE_MODE

NUM_ITEMS, MAX_LEN = 50, 12
RNG = np.random.default_rng(1)


def _histories(batch=3, length=MAX_LEN, valid=9):
    ids = RNG.integers(1, NUM_ITEMS + 1, size=(batch, length)).astype("int32")
    ids[:, valid:] = 0
    return ids


def _encoder(kind, **kwargs):
    kwargs.setdefault("hidden_dim", 16)
    kwargs.setdefault("chunk_size", 4)
    encoder = build_encoder(kind, num_items=NUM_ITEMS, max_len=MAX_LEN, **kwargs)
    encoder.set_item_popularity(RNG.integers(0, 100, size=NUM_ITEMS + 1))
    return encoder


def _assert_every_weight_trains_and_saves(encoder, ids, tmp_path):
    """Every trainable weight gets a gradient; saved and loaded, the same scores."""
    import tensorflow as tf

    model = SequentialRetrievalModel(encoder)
    targets = np.roll(ids, -1, axis=1)
    targets[ids == 0] = 0
    with tf.GradientTape() as tape:
        loss = model.compute_loss(y=targets, y_pred=model(ids, training=True))
    grads = tape.gradient(loss, [w.value for w in model.trainable_weights])
    starved = [w.path for w, g in zip(model.trainable_weights, grads) if g is None or not np.any(g)]
    assert not starved
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(restored.score_items(ids)), np.asarray(model.score_items(ids))
    )
    assert restored.encoder.get_config() == encoder.get_config()


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_a_history_cut_to_a_narrower_width_gives_the_same_outputs(kind):
    """Length buckets feed causal encoders narrower inputs (shorter FFT, smaller chunks)."""
    encoder = _encoder(kind)
    ids = _histories(valid=MAX_LEN)
    base, base_alpha = encoder(ids, return_alpha=True)
    for width in (2, 3, 5, 8):
        out, alpha = encoder(ids[:, :width], return_alpha=True)
        np.testing.assert_allclose(np.asarray(out), np.asarray(base)[:, :width], atol=1e-5)
        if kind == "hybrid":
            np.testing.assert_allclose(
                np.asarray(alpha), np.asarray(base_alpha)[:, :width], atol=1e-6
            )


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_output_at_t_ignores_everything_after_t(kind):
    encoder = _encoder(kind)
    ids = _histories()
    base, base_alpha = (
        np.asarray(a) if a is not None else None for a in encoder(ids, return_alpha=True)
    )
    for t in (0, 3, 7):
        changed = ids.copy()
        changed[:, t + 1 :] = RNG.integers(1, NUM_ITEMS + 1, size=changed[:, t + 1 :].shape)
        padded = ids.copy()
        padded[:, t + 1 :] = 0
        for variant in (changed, padded):
            out, alpha = encoder(variant, return_alpha=True)
            np.testing.assert_allclose(np.asarray(out)[:, : t + 1], base[:, : t + 1], atol=1e-5)
            if kind == "hybrid":
                np.testing.assert_allclose(
                    np.asarray(alpha)[:, : t + 1], base_alpha[:, : t + 1], atol=1e-6
                )


def test_hybrid_blends_the_two_branches_with_an_observable_alpha():
    encoder = _encoder("hybrid")
    out, alpha = encoder(_histories(), return_alpha=True)
    alpha = np.asarray(alpha)
    assert alpha.shape == (3, MAX_LEN) and np.all((alpha > 0) & (alpha < 1))
    assert _encoder("sasrec")(_histories(), return_alpha=True)[1] is None


@pytest.mark.parametrize("kind", ["linrec", "sasrec"])
def test_paper_form_outputs_do_not_depend_on_trailing_padding(kind):
    encoder = _encoder(kind, causal=False)
    ids = _histories(valid=6)
    full = np.asarray(encoder(ids))[:, :6]
    np.testing.assert_allclose(np.asarray(encoder(ids[:, :6])), full, atol=1e-5)
    # ...while bidirectional outputs do depend on later items (it is not causal).
    changed = ids.copy()
    changed[:, 5] = (changed[:, 5] % NUM_ITEMS) + 1
    assert np.abs(np.asarray(encoder(changed))[:, 0] - full[:, 0]).max() > 1e-5


@pytest.mark.parametrize(
    "kind, gate_mode",
    [(kind, "statistics") for kind in ENCODER_KINDS]
    + [("hybrid", "hidden_state"), ("hybrid", "learned")],
)
def test_gradients_reach_every_trainable_weight(kind, gate_mode):
    import tensorflow as tf

    model = SequentialRetrievalModel(_encoder(kind, dropout_rate=0.0, gate_mode=gate_mode))
    ids = _histories()
    targets = np.roll(ids, -1, axis=1)
    targets[ids == 0] = 0
    with tf.GradientTape() as tape:
        loss = model.compute_loss(y=targets, y_pred=model(ids, training=True))
    weights = model.trainable_weights
    grads = tape.gradient(loss, [w.value for w in weights])
    missing = [w.path for w, g in zip(weights, grads, strict=True) if g is None]
    zero = [w.path for w, g in zip(weights, grads, strict=True) if g is not None and not np.any(g)]
    assert not missing and not zero, (missing, zero)


@pytest.mark.parametrize(
    "kind, gate_mode",
    [(kind, DEFAULT_GATE_MODE) for kind in ENCODER_KINDS] + [("hybrid", "statistics")],
)
def test_keras_save_and_load_reproduce_outputs_exactly(kind, gate_mode, tmp_path):
    encoder = _encoder(kind, gate_mode=gate_mode)
    model = SequentialRetrievalModel(encoder, loss="sampled_softmax", num_negatives=8)
    ids = _histories()
    expected = np.asarray(model.score_items(ids))
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(restored.score_items(ids)), expected)
    assert restored.loss_name == "sampled_softmax" and restored.num_negatives == 8
    if kind == "hybrid" and gate_mode == "statistics":  # the popularity counts travel along
        np.testing.assert_array_equal(
            np.asarray(restored.encoder.gate.item_counts),
            np.asarray(model.encoder.gate.item_counts),
        )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(kind="transformer"), "kind"),
        (dict(hidden_dim=10, num_heads=4), "hidden_dim"),
        (dict(max_len=0), "max_len"),
        (dict(num_items=0), "num_items"),
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(num_layers=0), "num_layers"),
        (dict(gate_mode="other"), "gate_mode"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    args = dict(kind="hybrid", num_items=NUM_ITEMS, max_len=MAX_LEN)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{argument}"):
        build_encoder(args.pop("kind"), **args)


@pytest.mark.parametrize("kind", [kind for kind in ENCODER_KINDS if kind != "hybrid"])
def test_pre_ln_baselines_are_causal_end_normalised_train_every_weight_and_save(kind, tmp_path):
    encoder = _encoder(kind, dropout_rate=0.0, num_layers=3, normalize_first=True)
    ids = _histories(batch=4)
    out = np.asarray(encoder(ids))
    # A LayerNorm after the last pre-LN block: unit scale at every item (9 a history).
    np.testing.assert_allclose(np.std(out[:, :9], axis=-1), 1.0, atol=1e-3)
    changed = ids.copy()
    changed[:, 6:] = RNG.integers(1, NUM_ITEMS + 1, size=changed[:, 6:].shape)
    np.testing.assert_allclose(np.asarray(encoder(changed))[:, :6], out[:, :6], atol=1e-5)
    np.testing.assert_allclose(np.asarray(encoder(ids[:, :5])), out[:, :5], atol=1e-5)
    _assert_every_weight_trains_and_saves(encoder, ids, tmp_path)
    post = _encoder(kind, dropout_rate=0.0, num_layers=3)
    assert encoder.count_params() == post.count_params() + 2 * 16  # the final LayerNorm


def test_the_hybrid_refuses_pre_ln_by_name():
    with pytest.raises(ValueError, match="^normalize_first: is built for the single-stack"):
        build_encoder("hybrid", num_items=NUM_ITEMS, max_len=MAX_LEN, normalize_first=True)


def test_out_of_range_ids_raise_a_clear_error():
    model = SequentialRetrievalModel(_encoder("fmlp"))
    ids = _histories()
    ids[0, 0] = NUM_ITEMS + 1
    with pytest.raises(ValueError, match="item_ids: ids must be in 0..50"):
        model.recommend(ids, k=5)
    with pytest.raises(ValueError, match="item_ids: expected shape"):
        model.recommend(ids[0], k=5)


@pytest.mark.parametrize("gate_mode", ["learned", "fixed"])
def test_gate_ablations(gate_mode):
    encoder = _encoder("hybrid", gate_mode=gate_mode)
    _, alpha = encoder(_histories(), return_alpha=True)
    alpha = np.asarray(alpha)
    # Without statistics, alpha is the same everywhere; "fixed" is 0.5 and not trained.
    np.testing.assert_allclose(alpha, alpha[0, 0], atol=1e-6)
    if gate_mode == "fixed":
        np.testing.assert_allclose(alpha, 0.5, atol=1e-6)
        assert not encoder.gate.trainable_weights
    else:  # one logit, nothing else
        assert [tuple(w.shape) for w in encoder.gate.trainable_weights] == [(1,)]


def test_hidden_state_gate_gives_a_causal_per_user_alpha_and_saves(tmp_path):
    encoder = _encoder("hybrid", gate_mode="hidden_state")
    ids = _histories(batch=4)
    out, alpha = (np.asarray(a) for a in encoder(ids, return_alpha=True))
    assert np.ptp(alpha[:, 5]) > 1e-4  # users differ, unlike "learned" and "fixed"
    changed = ids.copy()
    changed[:, 6:] = RNG.integers(1, NUM_ITEMS + 1, size=changed[:, 6:].shape)
    out2, alpha2 = (np.asarray(a) for a in encoder(changed, return_alpha=True))
    np.testing.assert_allclose(alpha2[:, :6], alpha[:, :6], atol=1e-5)
    np.testing.assert_allclose(out2[:, :6], out[:, :6], atol=1e-5)
    path = str(tmp_path / "encoder.keras")
    keras.saving.save_model(
        keras.Sequential([keras.Input((MAX_LEN,), dtype="int32"), encoder]), path
    )
    np.testing.assert_allclose(keras.saving.load_model(path)(ids), out, atol=1e-6)


def test_fixed_gate_stays_at_one_half_through_training():
    model = SequentialRetrievalModel(_encoder("hybrid", gate_mode="fixed"))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    ids = _histories(batch=8)
    targets = np.roll(ids, -1, axis=1)
    targets[ids == 0] = 0
    model.fit(ids, targets, epochs=3, verbose=0)
    _, alpha = model.encoder(ids, return_alpha=True)
    np.testing.assert_allclose(np.asarray(alpha), 0.5, atol=1e-6)
    assert not [w for w in model.trainable_weights if "gate" in w.path]


ALL_FEATURES = "basic,trend,recency,diversity,spectrum"
FUSION_VARIANTS = {
    "all-features": dict(gate_mode="statistics", gate_features=ALL_FEATURES),
    "vector-gate": dict(gate_output="vector"),
    "blend-norm": dict(fusion="blend_norm"),
    "statistics-hidden": dict(gate_mode="statistics_hidden", gate_features=ALL_FEATURES),
    "hidden-vector": dict(gate_mode="hidden_state", gate_output="vector"),
    "shared-ffn": dict(share_ffn=True),
    "shared-block": dict(shared_blocks=1),
    "shared-block-and-ffn": dict(shared_blocks=1, share_ffn=True),
    "layer-fusion": dict(fusion="layer"),
    "layer-fusion-statistics-vector": dict(
        fusion="layer", gate_mode="statistics", gate_output="vector"
    ),
}


@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
def test_fusion_variants_are_causal_train_every_weight_and_save(variant, tmp_path):
    encoder = _encoder("hybrid", dropout_rate=0.0, **FUSION_VARIANTS[variant])
    ids = _histories(batch=4)
    branches = encoder(ids, return_branches=True)
    out, alpha = np.asarray(branches["hidden"]), np.asarray(branches["alpha"])
    width = 16 if encoder.gate_output == "vector" else 1
    width *= encoder.num_layers if encoder.layer_fusion else 1  # one alpha (or d) a layer
    assert out.shape == (4, MAX_LEN, 16) and alpha.shape == (4, MAX_LEN, width)
    assert np.all((alpha > 0) & (alpha < 1))
    # Causal: changing what follows position 5 changes nothing up to it.
    changed = ids.copy()
    changed[:, 6:] = RNG.integers(1, NUM_ITEMS + 1, size=changed[:, 6:].shape)
    changed_branches = encoder(changed, return_branches=True)
    np.testing.assert_allclose(np.asarray(changed_branches["hidden"])[:, :6], out[:, :6], atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(changed_branches["alpha"])[:, :6], alpha[:, :6], atol=1e-5
    )
    _assert_every_weight_trains_and_saves(encoder, ids, tmp_path)


def test_statistics_gate_users_differ_and_blend_norm_restores_unit_scale():
    encoder = _encoder(
        "hybrid", gate_mode="statistics", gate_features=ALL_FEATURES, fusion="blend_norm"
    )
    ids = _histories(batch=6)
    branches = encoder(ids, return_branches=True)
    assert np.ptp(np.asarray(branches["alpha"])[:, 5, 0]) > 1e-4  # per-user alpha
    hidden = np.asarray(branches["hidden"])[:, :9]  # LayerNorm: mean 0, variance 1 per position
    np.testing.assert_allclose(hidden.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(hidden.var(-1), 1.0, atol=1e-3)


def test_shared_ffn_halves_the_feed_forward_weights():
    plain = _encoder("hybrid")
    shared = _encoder("hybrid", share_ffn=True)
    ffn = 2 * (16 * 64 + 64 + 64 * 16 + 16 + 2 * 16)  # 2 layers: inner, outer, LayerNorm
    assert plain.count_params() - shared.count_params() == ffn
    assert [w.path for w in shared.weights if "shared_ffn" in w.path]
    assert _encoder("fmlp", share_ffn=True).count_params() == _encoder("fmlp").count_params()


def test_a_shared_block_replaces_one_block_of_each_branch_by_one_trunk_block():
    plain = _encoder("hybrid")
    shared = _encoder("hybrid", shared_blocks=1)
    fmlp_block = [w for w in plain.weights if w.path.startswith("hybrid_encoder/fmlp_block_0/")]
    linrec_block = [w for w in plain.weights if w.path.startswith("hybrid_encoder/linrec_block_0/")]
    assert fmlp_block and linrec_block
    removed = sum(int(np.prod(w.shape)) for w in linrec_block)
    assert plain.count_params() - shared.count_params() == removed
    names = {w.path.split("/")[1] for w in shared.weights}
    assert {"shared_block_0", "linrec_block_1", "fmlp_block_1"} <= names
    assert not {"linrec_block_0", "fmlp_block_0"} & names
    # Both branches read the trunk: with one own block each, they differ but share its input.
    branches = shared(_histories(), return_branches=True)
    assert not np.allclose(np.asarray(branches["linrec"]), np.asarray(branches["fmlp"]))


def test_layer_fusion_blends_each_layers_two_mixers_on_one_stream_before_its_ffn():
    """fusion="layer": x = FFN_i(a_i LinRec_i(x) + (1 - a_i) Filter_i(x)), each alpha its own
    layer's; the weights are the shared-FFN hybrid's plus one gate output a further layer."""
    encoder = _encoder("hybrid", fusion="layer", dropout_rate=0.0)
    ids = _histories()
    branches = encoder(ids, return_branches=True)
    alpha = np.asarray(branches["alpha"])
    assert sorted(branches) == ["alpha", "fmlp", "hidden", "linrec"]
    assert alpha.shape == (3, MAX_LEN, 2) and branches["linrec"].shape == (3, MAX_LEN, 2, 16)
    mask = ids != 0
    x = encoder.embedding(ids)
    for i in range(2):
        a = alpha[..., i : i + 1]
        linrec = encoder.stacks["linrec"][i](x, mask=mask)
        fmlp = encoder.stacks["fmlp"][i](x, mask=mask)
        for name, mixed in (("linrec", linrec), ("fmlp", fmlp)):  # each layer's mixer output
            np.testing.assert_allclose(branches[name][:, :, i], np.asarray(mixed), atol=1e-5)
        x = encoder.shared_ffns[i](a * linrec + (1 - a) * fmlp)
    np.testing.assert_allclose(np.asarray(branches["hidden"]), np.asarray(x), atol=1e-5)
    _, mean_alpha = encoder(ids, return_alpha=True)
    np.testing.assert_allclose(np.asarray(mean_alpha), alpha.mean(-1), atol=1e-6)
    shared_ffn = _encoder("hybrid", share_ffn=True)
    assert encoder.count_params() == shared_ffn.count_params() + 1  # one more learned logit
    statistics = _encoder("hybrid", fusion="layer", gate_mode="statistics")
    shared_ffn = _encoder("hybrid", share_ffn=True, gate_mode="statistics")
    gate_output_row = 16 + 1  # one more alpha: 16 hidden units' weights and a bias
    assert statistics.count_params() == shared_ffn.count_params() + gate_output_row


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(fusion="layer", gate_mode="hidden_state"), "gate_mode"),
        (dict(fusion="layer", share_ffn=True), "share_ffn"),
        (dict(fusion="layer", shared_blocks=1), "shared_blocks"),
        (dict(shared_blocks=2), "shared_blocks"),
        (dict(shared_blocks=-1), "shared_blocks"),
        (dict(gate_features="basic,season"), "gate_features"),
        (dict(gate_output="matrix"), "gate_output"),
        (dict(fusion="concat"), "fusion"),
    ],
)
def test_bad_fusion_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}"):
        build_encoder("hybrid", num_items=NUM_ITEMS, max_len=MAX_LEN, **kwargs)


def test_a_baseline_has_no_blocks_to_share():
    with pytest.raises(ValueError, match="^shared_blocks: a fmlp encoder has one stack"):
        build_encoder("fmlp", num_items=NUM_ITEMS, max_len=MAX_LEN, shared_blocks=1)


def test_score_level_fusion_equals_the_blend_for_a_vector_gate():
    encoder = _encoder("hybrid", gate_output="vector")
    branches = {k: np.asarray(v) for k, v in encoder(_histories(), return_branches=True).items()}
    table = np.asarray(encoder.item_embeddings)
    alpha = branches["alpha"]
    blended = branches["hidden"] @ table.T
    mixed = (alpha * branches["linrec"]) @ table.T + ((1 - alpha) * branches["fmlp"]) @ table.T
    np.testing.assert_allclose(blended, mixed, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fusion", ["blend", "layer"])
def test_a_fixed_alpha_replaces_the_gate_in_every_layer(fusion):
    """fixed_alpha=a blends with a wherever the gate's alpha would go: the fixed gate's own
    0.5 gives its output, 1 (end blend) the LinRec branch, 0 (layers) the filters alone."""
    ids = _histories()
    fixed = _encoder("hybrid", fusion=fusion, gate_mode="fixed", dropout_rate=0.0)
    np.testing.assert_allclose(
        np.asarray(fixed(ids, fixed_alpha=0.5)), np.asarray(fixed(ids)), atol=1e-6
    )
    encoder = _encoder("hybrid", fusion=fusion, dropout_rate=0.0)
    width = 2 if fusion == "layer" else 1
    for a in (0.0, 1.0):
        branches = encoder(ids, return_branches=True, fixed_alpha=a)
        np.testing.assert_array_equal(branches["alpha"], np.full((3, MAX_LEN, width), a))
    gated = np.asarray(encoder(ids))
    if fusion == "blend":
        ones = encoder(ids, return_branches=True, fixed_alpha=1.0)
        np.testing.assert_allclose(ones["hidden"], ones["linrec"], atol=1e-6)
    else:
        x = encoder.embedding(ids)
        for fmlp, ffn in zip(encoder.stacks["fmlp"], encoder.shared_ffns):
            x = ffn(fmlp(x, mask=ids != 0))
        np.testing.assert_allclose(
            np.asarray(encoder(ids, fixed_alpha=0.0)), np.asarray(x), atol=1e-5
        )
    assert not np.allclose(np.asarray(encoder(ids, fixed_alpha=0.0)), gated, atol=1e-4)


def test_a_model_saved_with_the_old_learned_gate_loads_and_scores_the_same():
    """Before 4 December 2026 a learned alpha was the statistics gate's MLP fed zeros; a
    .keras file saved then (made with that version, alpha = sigmoid(0.7)) still loads."""
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    model = keras.models.load_model(
        os.path.join(fixtures, "hybrid_learned_gate_saved_2026-12-03.keras")
    )
    expected = np.load(os.path.join(fixtures, "hybrid_learned_gate_saved_2026-12-03_scores.npy"))
    ids = np.array([[1, 2, 3, 0, 0, 0, 0, 0], [4, 5, 6, 7, 8, 9, 10, 11]], dtype="int32")
    np.testing.assert_allclose(np.asarray(model.score_items(ids)), expected, rtol=1e-5, atol=1e-6)
    _, alpha = model.encoder(ids, return_alpha=True)
    np.testing.assert_allclose(np.asarray(alpha), 1 / (1 + np.exp(-0.7)), atol=1e-6)
    resaved = SequentialRetrievalModel.from_config(model.get_config())  # and keeps its layout
    assert type(resaved.encoder.gate).__name__ == "SequenceStatsGate"
