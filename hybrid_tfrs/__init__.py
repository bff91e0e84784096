"""hybrid-tfrs: LinRec linear attention + FMLP-Rec filter, blended by a learned weight.

Under Keras 3 (default) the package exports the layers, ``build_encoder`` and
the ``SequentialRetrievalModel``; with ``TF_USE_LEGACY_KERAS=1`` the same layers
build on tf_keras and ``hybrid_tfrs.tfrs_model`` has the TFRS model.

The Keras names are imported on first use (PEP 562), so that ``import
hybrid_tfrs`` and the command-line tools' flag checks do not wait for TensorFlow.
"""

import importlib

from hybrid_tfrs.config import ENCODER_KINDS

__version__ = "0.1.0"

_LAZY = {
    "layers": ("hybrid_tfrs.layers", None),
    "LEGACY_KERAS": ("hybrid_tfrs.backend", "LEGACY_KERAS"),
    "SequenceEncoder": ("hybrid_tfrs.encoders", "SequenceEncoder"),
    "build_encoder": ("hybrid_tfrs.encoders", "build_encoder"),
    "SequentialRetrievalModel": ("hybrid_tfrs.retrieval", "SequentialRetrievalModel"),
}
__all__ = [
    "ENCODER_KINDS",
    "SequenceEncoder",
    "SequentialRetrievalModel",
    "build_encoder",
    "layers",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
