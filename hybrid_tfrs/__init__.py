"""hybrid-tfrs: LinRec linear attention + FMLP-Rec filter, blended per user.

Under Keras 3 (default) the package exports the layers, ``build_encoder`` and
the ``SequentialRetrievalModel``; with ``TF_USE_LEGACY_KERAS=1`` the same layers
build on tf_keras and ``hybrid_tfrs.tfrs_model`` has the TFRS model.
"""

from hybrid_tfrs import layers
from hybrid_tfrs.backend import LEGACY_KERAS
from hybrid_tfrs.encoders import ENCODER_KINDS, SequenceEncoder, build_encoder

__version__ = "0.1.0"
__all__ = ["ENCODER_KINDS", "SequenceEncoder", "build_encoder", "layers"]

if not LEGACY_KERAS:
    from hybrid_tfrs.retrieval import SequentialRetrievalModel  # noqa: F401

    __all__.append("SequentialRetrievalModel")
