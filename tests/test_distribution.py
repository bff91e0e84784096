"""tf.distribute: a replicated step updates the weights as one device does."""

import json

import pytest
from conftest import run_python

# One SGD step on the same global batch, on one device and mirrored over two
# logical CPUs; prints the largest weight difference. SGD (not Adam) so that a
# loss counted twice (summed replica gradients) shows as a doubled update.
ONE_STEP = """
import json, os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from hybrid_tfrs import SequentialRetrievalModel, build_encoder

normalization, unequal = os.environ["NORMALIZATION"], os.environ["BATCH"] == "unequal"
rng = np.random.default_rng(0)
inputs = rng.integers(1, 30, size=(4, 6)).astype("int32")
targets = rng.integers(1, 30, size=(4, 6)).astype("int32")
if unequal:  # the replicas' halves hold 12 and 5 targets
    inputs[2:, 1:] = 0
    targets[2:, 1:] = 0
    targets[3, 0] = 0
data = tf.data.Dataset.from_tensors((inputs, targets))

def trained(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        encoder = build_encoder("sasrec", num_items=30, max_len=6, hidden_dim=8, num_heads=1,
                                dropout_rate=0.0)
        per_batch = 8.5 if normalization == "target" else None
        model = SequentialRetrievalModel(encoder, loss_normalization=normalization,
                                         targets_per_batch=per_batch)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(data, epochs=1, verbose=0)
    return [np.asarray(w) for w in model.weights]

one = trained(tf.distribute.get_strategy())
two = trained(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
                  "moved": max(float(np.abs(a).max()) for a in one)}))
"""


@pytest.mark.parametrize(
    "normalization, batch",
    [("batch", "equal"), ("target", "equal"), ("target", "unequal")],
)
def test_mirrored_step_equals_the_single_device_step(normalization, batch):
    result = run_python(ONE_STEP, {"NORMALIZATION": normalization, "BATCH": batch}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    diff = json.loads(result.stdout.strip().splitlines()[-1])["diff"]
    assert diff < 1e-5, f"mirrored and single-device weights differ by {diff}"
