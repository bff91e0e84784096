"""The same layers under legacy Keras (TFRS) and under the JAX backend.

Each runs in a fresh interpreter, since the Keras flavour and backend are
fixed at import time.
"""

import importlib.util

import pytest
from conftest import run_python

LEGACY_TFRS_SCRIPT = r"""
import os, tempfile
import numpy as np, tensorflow as tf, tf_keras
from hybrid_tfrs import build_encoder, layers
from hybrid_tfrs.tfrs_model import TFRSRetrievalModel
assert isinstance(layers.LinearAttention(), tf_keras.layers.Layer)
N, L = 60, 16
rng = np.random.default_rng(0)
starts = rng.integers(1, N + 1, 256)
seqs = ((starts[:, None] + np.arange(L + 1)) - 1) % N + 1
ds = tf.data.Dataset.from_tensor_slices(
    {"item_ids": seqs[:, :-1].astype("int32"), "targets": seqs[:, 1:].astype("int32")}
).batch(32)
encoder = build_encoder("hybrid", num_items=N, max_len=L, hidden_dim=32)
model = TFRSRetrievalModel(encoder)
model.compile(optimizer=tf_keras.optimizers.Adam(3e-3))
losses = model.fit(ds, epochs=4, verbose=0).history["loss"]
print("LOSSES", losses)
assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.85 * losses[0], losses
variant = build_encoder(
    "hybrid", num_items=N, max_len=L, hidden_dim=16, gate_mode="statistics_hidden",
    gate_features="basic,trend,recency,diversity,spectrum", gate_output="vector",
    fusion="blend_norm", share_ffn=True, shared_blocks=1,
)
assert variant(seqs[:4, :-1].astype("int32")).shape == (4, L, 16)
ids = seqs[:4, :-1].astype("int32")
folder = tempfile.mkdtemp()
for kind in ("hybrid", "fmlp", "linrec", "sasrec"):  # a .keras file keeps every block
    inputs = tf_keras.Input(shape=(L,), dtype="int32")
    encoder = build_encoder(kind, num_items=N, max_len=L, hidden_dim=16)
    saved = tf_keras.Model(inputs, encoder(inputs))
    saved.save(os.path.join(folder, f"{kind}.keras"))
    loaded = tf_keras.models.load_model(os.path.join(folder, f"{kind}.keras"))
    np.testing.assert_allclose(loaded(ids).numpy(), saved(ids).numpy(), atol=1e-6, err_msg=kind)
try:
    import hybrid_tfrs.retrieval
except ImportError as error:
    assert "TF_USE_LEGACY_KERAS" in str(error)
else:
    raise AssertionError("the Keras 3 model must refuse legacy Keras")
mixed = build_encoder("hybrid", num_items=N, max_len=L, hidden_dim=16, dtype="mixed_float16")
assert mixed(ids).dtype == tf.float16  # the layers compute in 16 bits under tf_keras too
try:
    TFRSRetrievalModel(mixed)
except ValueError as error:  # tfrs's Retrieval task would score in 16 bits
    assert "'mixed_float16'" in str(error) and "SequentialRetrievalModel" in str(error)
else:
    raise AssertionError("the tfrs model must refuse a mixed policy")
print("OK")
"""

JAX_SCRIPT = r"""
import numpy as np, keras
assert keras.backend.backend() == "jax"
from hybrid_tfrs import ENCODER_KINDS, SequentialRetrievalModel, build_encoder
from hybrid_tfrs.run_model import score_function
N, L = 40, 12
rng = np.random.default_rng(0)
ids = rng.integers(1, N + 1, size=(4, L)).astype("int32")
ids[:, 9:] = 0
VARIANT = dict(
    gate_mode="statistics_hidden", gate_features="basic,trend,recency,diversity,spectrum",
    gate_output="vector", fusion="blend_norm", share_ffn=True, shared_blocks=1,
)
LAYER_FUSION = dict(fusion="layer", gate_output="vector")
for kind, options in [(kind, {}) for kind in ENCODER_KINDS] + [
    ("hybrid", VARIANT), ("hybrid", LAYER_FUSION)
]:
    encoder = build_encoder(kind, num_items=N, max_len=L, hidden_dim=16, chunk_size=4, **options)
    out = np.asarray(encoder(ids))
    cut = ids.copy(); cut[:, 5:] = 0
    np.testing.assert_allclose(np.asarray(encoder(cut))[:, :5], out[:, :5], atol=1e-5)
    model = SequentialRetrievalModel(encoder)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    targets = np.roll(ids, -1, axis=1); targets[ids == 0] = 0; targets[:, 8] = 0
    history = model.fit(ids, targets, epochs=3, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < history[0], (kind, history)
    # Evaluation's compiled queries read the weights as trained, not as first seen.
    query = score_function(model)(ids)["query"]
    np.testing.assert_allclose(query, np.asarray(model.query_embedding(ids)), atol=1e-5)
    print(kind, "ok", history)
print("OK")
"""


def test_layers_train_inside_a_tfrs_model_under_legacy_keras():
    result = run_python(LEGACY_TFRS_SCRIPT, {"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_encoders_run_and_train_on_the_jax_backend():
    # Tiny graphs: XLA's optimisation passes cost far more than they save (the
    # compiles are most of this test's time); the programs traced and run are the same.
    result = run_python(JAX_SCRIPT, {"KERAS_BACKEND": "jax", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-3000:]
