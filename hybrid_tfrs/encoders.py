"""Sequence encoders: the hybrid and the baselines built from the same parts."""

import numpy as np

from hybrid_tfrs.backend import keras, ops, register_serializable
from hybrid_tfrs.config import ENCODER_KINDS, GATE_MODES
from hybrid_tfrs.layers.blocks import MixerBlock
from hybrid_tfrs.layers.embedding import SequenceEmbedding
from hybrid_tfrs.layers.gate import HiddenStateGate, SequenceStatsGate


@register_serializable()
class SequenceEncoder(keras.layers.Layer):
    """Maps item-id histories to one query vector per position.

    ``kind="hybrid"`` runs a LinRec stack and an FMLP-Rec stack over a shared
    item + position embedding and blends them with ``SequenceStatsGate``:
    ``h = alpha * h_linrec + (1 - alpha) * h_fmlp``. ``"linrec"``, ``"fmlp"`` and
    ``"sasrec"`` are the single-stack baselines. Use ``build_encoder`` to make one.

    Call args:
        item_ids: [B, L] int, ids 1..num_items, 0 = padding; sequences
            left-aligned and padded on the right; L <= max_len.
        return_alpha: hybrid only: also return the gate value alpha [B, L].

    Returns:
        [B, L, hidden_dim] (and alpha [B, L] when asked).
    """

    def __init__(
        self,
        kind,
        num_items,
        max_len,
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        dropout_rate=0.2,
        causal=True,
        chunk_size=64,
        inner_dim=None,
        gate_units=16,
        gate_mode="statistics",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kind = kind
        self.num_items = num_items
        self.max_len = max_len
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.causal = causal
        self.chunk_size = chunk_size
        self.inner_dim = inner_dim or 4 * hidden_dim
        self.gate_units = gate_units
        self.gate_mode = gate_mode

        self.embedding = SequenceEmbedding(
            num_items, max_len, hidden_dim, dropout_rate, name="embedding"
        )
        mixers = ("linrec", "fmlp") if kind == "hybrid" else (kind,)
        self.stacks = {
            mixer: [
                MixerBlock(
                    mixer,
                    max_len=max_len,
                    num_heads=num_heads,
                    inner_dim=self.inner_dim,
                    dropout_rate=dropout_rate,
                    causal=causal,
                    chunk_size=chunk_size,
                    name=f"{mixer}_block_{i}",
                )
                for i in range(num_layers)
            ]
            for mixer in mixers
        }
        self.gate = None
        if kind == "hybrid" and gate_mode == "hidden_state":
            self.gate = HiddenStateGate(gate_units, name="gate")
        elif kind == "hybrid":
            self.gate = SequenceStatsGate(
                num_items,
                max_len,
                hidden_units=gate_units,
                use_statistics=gate_mode == "statistics",
                name="gate",
            )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.embedding.build(input_shape)
        hidden_shape = input_shape + (self.hidden_dim,)
        for blocks in self.stacks.values():
            for block in blocks:
                block.build(hidden_shape)
        if isinstance(self.gate, HiddenStateGate):
            self.gate.build(hidden_shape, hidden_shape)
        elif self.gate is not None:
            self.gate.build(input_shape)
        if self.gate_mode == "fixed" and self.gate is not None:
            # After build: Keras passes ``trainable`` on only to sublayers that exist.
            self.gate.trainable = False
        super().build(input_shape)

    @property
    def item_embeddings(self):
        """The item table shared with the candidate tower: [num_items + 1, d]."""
        return self.embedding.item_embedding.embeddings

    def set_item_popularity(self, counts):
        """Training item counts [num_items + 1] for the gate (no-op without one)."""
        if isinstance(self.gate, SequenceStatsGate):
            self.gate.set_item_popularity(counts)

    def call(self, item_ids, training=None, return_alpha=False):
        item_ids = ops.cast(item_ids, "int32")
        mask = ops.not_equal(item_ids, 0)
        x = self.embedding(item_ids, training=training)
        outputs = {}
        for mixer, blocks in self.stacks.items():
            h = x
            for block in blocks:
                h = block(h, mask=mask, training=training)
            outputs[mixer] = h
        if self.gate is None:
            hidden = outputs[self.kind]
            return (hidden, None) if return_alpha else hidden
        if isinstance(self.gate, HiddenStateGate):
            alpha = self.gate(outputs["linrec"], outputs["fmlp"])
        else:
            alpha = self.gate(item_ids)
        hidden = alpha * outputs["linrec"] + (1.0 - alpha) * outputs["fmlp"]
        return (hidden, alpha[:, :, 0]) if return_alpha else hidden

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            kind=self.kind,
            num_items=self.num_items,
            max_len=self.max_len,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            causal=self.causal,
            chunk_size=self.chunk_size,
            inner_dim=self.inner_dim,
            gate_units=self.gate_units,
            gate_mode=self.gate_mode,
        )
        return config


def _require(condition, argument, message):
    if not condition:
        raise ValueError(f"{argument}: {message}")


def build_encoder(
    kind,
    *,
    num_items,
    max_len,
    hidden_dim=64,
    num_layers=2,
    num_heads=2,
    dropout_rate=0.2,
    causal=True,
    chunk_size=64,
    inner_dim=None,
    gate_units=16,
    gate_mode="statistics",
    item_popularity=None,
    name=None,
):
    """Builds a ``SequenceEncoder`` after checking its arguments.

    Args:
        kind: ``"hybrid"``, ``"linrec"``, ``"fmlp"`` or ``"sasrec"``.
        num_items: catalogue size N (ids 1..N, 0 = padding).
        max_len: longest history the encoder reads.
        hidden_dim, num_layers, num_heads, dropout_rate: the usual sizes.
        causal: causal forms (train every position) or the papers' forms.
        chunk_size: chunk length of causal linear attention.
        inner_dim: FFN width (default 4 * hidden_dim).
        gate_units: hidden units of the hybrid's gate.
        gate_mode: ``"statistics"`` (the gate reads sequence statistics),
            ``"learned"`` (one learned alpha, ignoring them), ``"fixed"``
            (alpha = 0.5, not trained) or ``"hidden_state"`` (a per-user,
            per-position alpha learned from the branch outputs, ignoring the
            statistics); ablations of the hybrid.
        item_popularity: optional training counts [num_items + 1] for the gate.

    Returns:
        A built ``SequenceEncoder``: [B, L] int ids -> [B, L, hidden_dim].

    Example:
    >>> encoder = build_encoder("hybrid", num_items=100, max_len=20)
    >>> encoder(np.ones((2, 20), "int32")).shape
    (2, 20, 64)
    """
    _require(kind in ENCODER_KINDS, "kind", f"must be one of {ENCODER_KINDS}, got {kind!r}")
    _require(int(num_items) >= 1, "num_items", f"must be >= 1, got {num_items}")
    _require(int(max_len) >= 1, "max_len", f"must be >= 1, got {max_len}")
    _require(int(hidden_dim) >= 1, "hidden_dim", f"must be >= 1, got {hidden_dim}")
    _require(int(num_layers) >= 1, "num_layers", f"must be >= 1, got {num_layers}")
    _require(int(num_heads) >= 1, "num_heads", f"must be >= 1, got {num_heads}")
    _require(0.0 <= dropout_rate < 1.0, "dropout_rate", f"must be in [0, 1), got {dropout_rate}")
    _require(int(chunk_size) >= 1, "chunk_size", f"must be >= 1, got {chunk_size}")
    _require(
        gate_mode in GATE_MODES, "gate_mode", f"must be one of {GATE_MODES}, got {gate_mode!r}"
    )
    if kind != "fmlp":
        _require(
            hidden_dim % num_heads == 0,
            "hidden_dim",
            f"({hidden_dim}) must be divisible by num_heads ({num_heads})",
        )
    encoder = SequenceEncoder(
        kind,
        int(num_items),
        int(max_len),
        hidden_dim=int(hidden_dim),
        num_layers=int(num_layers),
        num_heads=int(num_heads),
        dropout_rate=float(dropout_rate),
        causal=bool(causal),
        chunk_size=int(chunk_size),
        inner_dim=inner_dim,
        gate_units=int(gate_units),
        gate_mode=gate_mode,
        name=name or f"{kind}_encoder",
    )
    encoder.build((None, int(max_len)))
    if item_popularity is not None:
        encoder.set_item_popularity(item_popularity)
    return encoder


def check_item_ids(item_ids, num_items, argument="item_ids"):
    """Raises a clear ValueError if concrete ids fall outside 0..num_items."""
    ids = np.asarray(item_ids)
    if ids.ndim != 2:
        raise ValueError(f"{argument}: expected shape [batch, length], got {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > num_items):
        raise ValueError(
            f"{argument}: ids must be in 0..{num_items} (0 = padding), "
            f"got values in {ids.min()}..{ids.max()}"
        )
    return ids.astype("int32")
