"""Reusable Keras layers of hybrid-tfrs (Keras 3, or tf_keras with TF_USE_LEGACY_KERAS=1)."""

from hybrid_tfrs.layers.blocks import MIXERS, FeedForward, MixerBlock
from hybrid_tfrs.layers.embedding import SequenceEmbedding
from hybrid_tfrs.layers.frequency_filter import FrequencyFilter
from hybrid_tfrs.layers.gate import (
    FEATURE_NAMES,
    GlobalGate,
    HiddenStateGate,
    SequenceStatsGate,
)
from hybrid_tfrs.layers.linear_attention import LinearAttention, causal_linear_attention
from hybrid_tfrs.layers.seen_item_bias import SeenItemBias
from hybrid_tfrs.layers.sequence_features import repeat_flags, sequence_features

__all__ = [
    "FEATURE_NAMES",
    "MIXERS",
    "FeedForward",
    "FrequencyFilter",
    "GlobalGate",
    "HiddenStateGate",
    "LinearAttention",
    "MixerBlock",
    "SeenItemBias",
    "SequenceEmbedding",
    "SequenceStatsGate",
    "causal_linear_attention",
    "repeat_flags",
    "sequence_features",
]
