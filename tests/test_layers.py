"""The reusable layers: exact causal forms, chunking, padding, serialisation."""

import keras
import numpy as np
import pytest

from hybrid_tfrs.layers import (
    FeedForward,
    FrequencyFilter,
    GlobalGate,
    LinearAttention,
    MixerBlock,
    SequenceEmbedding,
    SequenceStatsGate,
    causal_linear_attention,
    repeat_flags,
)

RNG = np.random.default_rng(0)


def _copy_weights(source, target, shape):
    target.build(shape)
    target.set_weights(source.get_weights())
    return target


def test_causal_linear_attention_equals_bidirectional_on_each_prefix():
    x = RNG.normal(size=(3, 11, 8)).astype("float32")
    causal = LinearAttention(num_heads=2, chunk_size=4)
    out = np.asarray(causal(x))
    paper = _copy_weights(causal, LinearAttention(num_heads=2, causal=False), x.shape)
    for t in range(x.shape[1]):
        prefix_last = np.asarray(paper(x[:, : t + 1]))[:, -1]
        np.testing.assert_allclose(out[:, t], prefix_last, atol=2e-5, err_msg=f"t={t}")


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 5, 13, 64])
def test_chunkwise_linear_attention_equals_quadratic_reference(chunk_size):
    b, h, length, d = 2, 2, 13, 4  # 13 is not a multiple of 3, 4 or 5
    q, k, v = (RNG.normal(size=(b, h, length, d)).astype("float32") for _ in range(3))
    scores = np.einsum("bhld,bhsd->bhls", q, k) * np.tril(np.ones((length, length)))
    reference = np.einsum("bhls,bhsd->bhld", scores, v)
    got = np.asarray(causal_linear_attention(q, k, v, chunk_size))
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_bidirectional_linear_attention_ignores_padded_positions():
    x = RNG.normal(size=(2, 9, 8)).astype("float32")
    mask = np.ones((2, 9), "float32")
    mask[:, 6:] = 0
    layer = LinearAttention(num_heads=2, causal=False)
    before = np.asarray(layer(x, mask=mask))[:, :6]
    x_changed = x.copy()
    x_changed[:, 6:] = RNG.normal(size=(2, 3, 8)) * 10
    after = np.asarray(layer(x_changed, mask=mask))[:, :6]
    np.testing.assert_allclose(before, after, atol=1e-5)
    unmasked = np.asarray(layer(x_changed))[:, :6]
    assert np.abs(unmasked - before).max() > 1e-3  # the mask is what protects them


def test_causal_filter_equals_circular_filter_on_left_padded_window():
    length = 12
    x = RNG.normal(size=(3, length, 8)).astype("float32")
    causal = FrequencyFilter(max_len=length)
    out = np.asarray(causal(x))
    circular = _copy_weights(causal, FrequencyFilter(max_len=length, causal=False), x.shape)
    for t in range(length):
        window = np.zeros_like(x)
        window[:, length - 1 - t :] = x[:, : t + 1]
        np.testing.assert_allclose(
            out[:, t], np.asarray(circular(window))[:, -1], atol=1e-5, err_msg=f"t={t}"
        )


def test_causal_filter_is_not_circular_at_inner_positions():
    length = 8
    x = RNG.normal(size=(1, length, 4)).astype("float32")
    causal = FrequencyFilter(max_len=length)
    first = np.asarray(causal(x))[:, 0]
    circular = _copy_weights(causal, FrequencyFilter(max_len=length, causal=False), x.shape)
    assert np.abs(first - np.asarray(circular(x))[:, 0]).max() > 1e-4


def test_causal_filter_accepts_shorter_inputs_circular_refuses():
    x = RNG.normal(size=(2, 5, 4)).astype("float32")
    full = np.zeros((2, 10, 4), "float32")
    full[:, :5] = x
    layer = FrequencyFilter(max_len=10)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(layer(full))[:, :5], atol=1e-6)
    with pytest.raises(ValueError, match="max_len=10"):
        FrequencyFilter(max_len=10, causal=False)(x)
    longer = RNG.normal(size=(2, 12, 4)).astype("float32")  # its wrap-around would be silent
    with pytest.raises(ValueError, match="inputs of 12 positions, more than max_len=10"):
        layer(longer)


@pytest.mark.parametrize("causal", [True, False])
def test_the_filter_runs_its_ffts_in_float32_under_mixed_precision(causal):
    x = RNG.normal(size=(2, 8, 4)).astype("float32")
    exact = FrequencyFilter(max_len=8, causal=causal)
    expected = np.asarray(exact(x))
    mixed = _copy_weights(exact, FrequencyFilter(8, causal, dtype="mixed_float16"), x.shape)
    out = mixed(x.astype("float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(np.asarray(out, "float32"), expected, atol=2e-3)


def test_repeat_flags_and_gate_features_by_hand():
    ids = np.array([[3, 5, 3, 3, 7, 0, 0]])
    np.testing.assert_array_equal(np.asarray(repeat_flags(ids))[0, :5], [0, 0, 1, 1, 0])
    gate = SequenceStatsGate(num_items=9, max_len=7)
    gate.build((None, None))
    counts = np.zeros(10)
    counts[[3, 5, 7]] = [1, 3, 7]
    gate.set_item_popularity(counts)
    feats = np.asarray(gate.features(ids))[0]
    log_pop = np.log1p(counts) / np.log1p(7)
    pops = log_pop[[3, 5, 3, 3, 7]]
    for t in range(5):
        seen = pops[: t + 1]
        np.testing.assert_allclose(feats[t, 0], np.log1p(t + 1) / np.log1p(7), rtol=1e-5)
        np.testing.assert_allclose(feats[t, 1], seen.mean(), rtol=1e-5)
        np.testing.assert_allclose(feats[t, 2], np.sqrt(seen.var() + 1e-6), rtol=1e-4)
        np.testing.assert_allclose(feats[t, 3], [0, 0, 1, 2, 2][t] / (t + 1), rtol=1e-5)
        np.testing.assert_allclose(feats[t, 4], pops[t], rtol=1e-5)
    np.testing.assert_array_equal(feats[5:], 0.0)
    alpha = np.asarray(gate(ids))
    assert alpha.shape == (1, 7, 1) and np.all((alpha > 0) & (alpha < 1))


def test_gate_rejects_wrong_popularity_size():
    gate = SequenceStatsGate(num_items=9, max_len=7)
    with pytest.raises(ValueError, match="num_items \\+ 1 = 10"):
        gate.set_item_popularity(np.ones(5))


def test_global_gate_is_one_trained_weight_the_same_for_every_position():
    gate = GlobalGate(output_units=2)
    ids = RNG.integers(0, 21, size=(3, 5)).astype("int32")
    np.testing.assert_allclose(np.asarray(gate(ids)), 0.5)  # logit 0 at the start
    assert [tuple(w.shape) for w in gate.trainable_weights] == [(2,)]
    gate.alpha_logit.assign(np.array([0.0, np.log(3.0)], dtype="float32"))
    alpha = np.asarray(gate(ids))
    assert alpha.shape == (3, 5, 2)
    np.testing.assert_allclose(alpha[..., 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(alpha[..., 1], 0.75, atol=1e-6)  # sigmoid(log 3)


@pytest.mark.parametrize(
    "make_layer, make_input",
    [
        (lambda: LinearAttention(num_heads=2, chunk_size=3), lambda: RNG.normal(size=(2, 7, 8))),
        (lambda: LinearAttention(num_heads=2, causal=False), lambda: RNG.normal(size=(2, 7, 8))),
        (lambda: FrequencyFilter(max_len=7), lambda: RNG.normal(size=(2, 7, 8))),
        (lambda: FeedForward(16), lambda: RNG.normal(size=(2, 7, 8))),
        (lambda: MixerBlock("linrec", max_len=7), lambda: RNG.normal(size=(2, 7, 8))),
        (lambda: MixerBlock("fmlp", max_len=7), lambda: RNG.normal(size=(2, 7, 8))),
        (lambda: MixerBlock("sasrec", max_len=7), lambda: RNG.normal(size=(2, 7, 8))),
        (
            lambda: MixerBlock("sasrec", max_len=7, normalize_first=True),
            lambda: RNG.normal(size=(2, 7, 8)),
        ),
        (lambda: SequenceEmbedding(20, 7, 8), lambda: RNG.integers(0, 21, size=(2, 7))),
        (lambda: SequenceStatsGate(20, 7), lambda: RNG.integers(0, 21, size=(2, 7))),
        (lambda: GlobalGate(output_units=3), lambda: RNG.integers(0, 21, size=(2, 7))),
    ],
)
def test_get_config_from_config_reproduces_outputs(make_layer, make_input):
    x = make_input()
    x = x.astype("float32") if x.dtype.kind == "f" else x.astype("int32")
    layer = make_layer()
    expected = np.asarray(layer(x))
    clone = type(layer).from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), expected, atol=1e-6)
    assert keras.saving.get_registered_name(type(layer)).startswith("hybrid_tfrs>")


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda normalize_first: FeedForward(16, normalize_first=normalize_first),
        *(
            lambda normalize_first, mixer=mixer: MixerBlock(
                mixer, max_len=7, use_ffn=False, normalize_first=normalize_first
            )
            for mixer in ("linrec", "fmlp", "sasrec")
        ),
    ],
)
def test_a_pre_ln_sublayer_adds_to_its_input_what_its_normalised_input_gives(make_layer):
    """Pre-LN: ``x + f(LN(x))``, so scaling x by c adds the same residual to c x (post-LN:
    ``LN(x + f(x))`` has unit scale whatever c)."""
    x = RNG.normal(size=(2, 7, 8)).astype("float32")
    pre, post = make_layer(True), make_layer(False)
    for c in (1.0, 10.0):
        residual = np.asarray(pre(c * x)) - c * x
        np.testing.assert_allclose(residual, np.asarray(pre(x)) - x, atol=1e-4)
    assert np.abs(np.asarray(pre(10.0 * x))).mean() > 5 * np.abs(np.asarray(pre(x))).mean()
    np.testing.assert_allclose(np.std(np.asarray(post(10.0 * x)), axis=-1), 1.0, atol=1e-3)


def test_layers_in_a_user_built_functional_model(tmp_path):
    num_items, length = 30, 10
    ids = keras.Input(shape=(length,), dtype="int32")
    x = keras.layers.Embedding(num_items + 1, 16, mask_zero=True)(ids)
    x = LinearAttention(num_heads=4, chunk_size=4)(x)
    x = FrequencyFilter(max_len=length)(x)
    x = MixerBlock("fmlp", max_len=length, inner_dim=32)(x)
    out = keras.layers.Dense(num_items + 1)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(ids, out)
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    data = RNG.integers(1, num_items + 1, size=(32, length)).astype("int32")
    data[:, 7:] = 0
    labels = data[:, 0]
    history = model.fit(data, labels, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "user_model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(
        np.asarray(restored.predict(data, verbose=0)),
        np.asarray(model.predict(data, verbose=0)),
        atol=1e-6,
    )


def test_extra_gate_features_by_hand():
    from hybrid_tfrs.layers.sequence_features import feature_names, sequence_features

    ids = np.array([[3, 5, 3, 3, 7, 0]])
    log_pop = np.linspace(0.0, 1.0, 10).astype("float32")
    # Items 3 and 5 point the same way, 7 the opposite way: unit vectors in 2-D.
    vectors = np.zeros((1, 6, 2), "float32")
    vectors[0, :5] = [[1, 0], [2, 0], [1, 0], [1, 0], [-3, 0]]
    groups = ("trend", "recency", "diversity", "spectrum")
    feats = np.asarray(sequence_features(ids, log_pop, 9, groups, vectors, window=2))[0]
    names = feature_names(groups)
    col = {name: feats[:, names.index(name)] for name in names}
    pops = log_pop[[3, 5, 3, 3, 7]]
    recent = [pops[0], pops[:2].mean(), pops[1:3].mean(), pops[2:4].mean(), pops[3:5].mean()]
    np.testing.assert_allclose(col["recent_log_popularity"][:5], recent, rtol=1e-5)
    means = np.cumsum(pops) / np.arange(1, 6)
    np.testing.assert_allclose(col["popularity_trend"][:5], np.array(recent) - means, atol=1e-6)
    # 3 recurs at t=2 (gap 2) and t=3 (gap 1); scaled by log1p(max_len).
    gaps = np.log1p([0, 0, 2, 1, 0]) / np.log1p(9)
    np.testing.assert_allclose(col["previous_occurrence_gap"][:5], gaps, rtol=1e-5)
    np.testing.assert_allclose(col["recent_repeat_ratio"][:5], [0, 0, 0.5, 1, 0.5], atol=1e-6)
    # Window of 2: same direction -> 0, opposite directions -> 1.
    np.testing.assert_allclose(col["recent_diversity"][:5], [0, 0, 0, 0, 1], atol=2e-3)
    # Lag 1 cosines: t=1: 1; t=2: 1; t=3: 1; t=4: -1 -> running means.
    np.testing.assert_allclose(col["lag1_similarity"][:5], [0, 1, 1, 1, 0.5], atol=1e-6)
    np.testing.assert_allclose(col["lag2_similarity"][:5], [0, 0, 1, 1, 1 / 3], atol=1e-6)
    np.testing.assert_array_equal(feats[5], 0.0)
    with pytest.raises(ValueError, match="need item_vectors"):
        sequence_features(ids, log_pop, 9, ("spectrum",))
