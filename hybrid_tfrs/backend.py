"""Which Keras the layers are built on.

With ``TF_USE_LEGACY_KERAS=1`` (the setting tensorflow-recommenders needs) the
layer base classes come from ``tf_keras`` (Keras 2); otherwise from Keras 3.
The math is always written with Keras 3's ``keras.ops``, which on the
TensorFlow backend are plain TensorFlow ops and so run inside either.
"""

import os

import keras as _keras3

ops = _keras3.ops
random = _keras3.random

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")

if LEGACY_KERAS:
    import tf_keras as keras  # noqa: F401  (re-exported)

    def register_serializable(name=None):
        """Registers a layer class for (de)serialisation under ``hybrid_tfrs``."""
        return keras.utils.register_keras_serializable(package="hybrid_tfrs", name=name)

else:
    keras = _keras3

    def register_serializable(name=None):
        """Registers a layer class for (de)serialisation under ``hybrid_tfrs``."""
        return keras.saving.register_keras_serializable(package="hybrid_tfrs", name=name)


# add_weight's keyword for a weight that stays float32 inside call under a mixed
# dtype policy (e.g. the filter's weights, which its float32 FFTs read).
NO_AUTOCAST = {"experimental_autocast": False} if LEGACY_KERAS else {"autocast": False}

__all__ = ["keras", "ops", "random", "LEGACY_KERAS", "NO_AUTOCAST", "register_serializable"]
