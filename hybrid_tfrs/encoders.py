"""Sequence encoders: the hybrid and the baselines built from the same parts."""

import numpy as np

from hybrid_tfrs.backend import LEGACY_KERAS, keras, ops, register_serializable
from hybrid_tfrs.config import (
    DEFAULT_GATE_MODE,
    ENCODER_KINDS,
    FUSIONS,
    GATE_FEATURE_GROUPS,
    GATE_MODES,
    GATE_OUTPUTS,
    LAYER_FUSION_GATE_MODES,
)
from hybrid_tfrs.layers.blocks import FeedForward, MixerBlock
from hybrid_tfrs.layers.embedding import SequenceEmbedding
from hybrid_tfrs.layers.gate import GlobalGate, HiddenStateGate, SequenceStatsGate


@register_serializable()
class SequenceEncoder(keras.layers.Layer):
    """Maps item-id histories to one query vector per position.

    ``kind="hybrid"`` runs a LinRec stack and an FMLP-Rec stack over a shared
    item + position embedding and blends them:
    ``h = alpha * h_linrec + (1 - alpha) * h_fmlp``, alpha one learned weight
    by default (``GlobalGate``; ``gate_mode="statistics"``: per user and
    position, from statistics of the history, ``SequenceStatsGate``;
    ``fusion="blend_norm"``: LayerNorm of the blend). With ``shared_blocks=k``
    the first k of the ``num_layers`` blocks are one FMLP-Rec trunk that both
    branches read.
    ``fusion="layer"`` blends inside every layer instead, on one residual
    stream: ``x = FFN(alpha_i LinRec_i(x) + (1 - alpha_i) Filter_i(x))``, each
    mixer with its residual and LayerNorm, one FFN a layer and one alpha per
    layer from the gate.
    ``"linrec"``, ``"fmlp"`` and ``"sasrec"`` are the single-stack baselines;
    ``normalize_first=True`` makes their blocks pre-LN, with a LayerNorm after
    the last block (the original SASRec code's layout). Use ``build_encoder``
    to make one. ``global_gate=False`` rebuilds the layout a learned or fixed
    alpha had before 4 December 2026 (the statistics gate's MLP fed zeros), so
    models saved then still load; ``from_config`` sets it for a config saved
    without it.

    Call args:
        item_ids: [B, L] int, ids 1..num_items, 0 = padding; sequences
            left-aligned and padded on the right; L <= max_len.
        return_alpha: hybrid only: also return the gate value alpha [B, L]
            (a vector gate's mean over hidden units).
        return_branches: hybrid only: return ``{"linrec": [B, L, d],
            "fmlp": [B, L, d], "alpha": [B, L, 1 or d], "hidden": [B, L, d]}``
            (``fusion="layer"``: ``linrec`` and ``fmlp`` are each layer's mixer
            output before the blend, [B, L, num_layers, d], and ``alpha`` is
            [B, L, num_layers x (1 or d)], layer by layer).
        fixed_alpha: hybrid only: a float in [0, 1] to blend with in place of
            the gate's alpha, for every user, position and layer (a diagnosis:
            what one fixed blend gives the trained branches); ``alpha`` is
            returned as that constant.

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
        gate_mode=DEFAULT_GATE_MODE,
        gate_features=("basic",),
        gate_output="scalar",
        fusion="blend",
        share_ffn=False,
        shared_blocks=0,
        global_gate=True,
        normalize_first=False,
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
        self.gate_features = tuple(gate_features)
        self.gate_output = gate_output
        self.fusion = fusion
        self.share_ffn = bool(share_ffn and kind == "hybrid")
        self.layer_fusion = kind == "hybrid" and fusion == "layer"
        self.shared_blocks = int(shared_blocks) if kind == "hybrid" else 0
        self.normalize_first = bool(normalize_first and kind != "hybrid")

        self.embedding = SequenceEmbedding(
            num_items, max_len, hidden_dim, dropout_rate, name="embedding", dtype=self.dtype_policy
        )

        def block(mixer, name, use_ffn=True):
            return MixerBlock(
                mixer,
                max_len=max_len,
                num_heads=num_heads,
                inner_dim=self.inner_dim,
                dropout_rate=dropout_rate,
                causal=causal,
                chunk_size=chunk_size,
                use_ffn=use_ffn,
                normalize_first=self.normalize_first,
                name=name,
                dtype=self.dtype_policy,
            )

        self.trunk = [block("fmlp", f"shared_block_{i}") for i in range(self.shared_blocks)]
        own_layers = range(self.shared_blocks, num_layers)
        mixers = ("linrec", "fmlp") if kind == "hybrid" else (kind,)
        one_ffn_a_layer = self.share_ffn or self.layer_fusion
        self.stacks = {
            mixer: [block(mixer, f"{mixer}_block_{i}", not one_ffn_a_layer) for i in own_layers]
            for mixer in mixers
        }
        if LEGACY_KERAS:
            # tf_keras's .keras and .weights.h5 files follow one container level from an
            # attribute: the blocks in the stacks' lists would be neither saved nor loaded.
            self.stack_blocks = [block for blocks in self.stacks.values() for block in blocks]
        self.shared_ffns = [
            FeedForward(
                self.inner_dim, dropout_rate, name=f"shared_ffn_{i}", dtype=self.dtype_policy
            )
            for i in (own_layers if one_ffn_a_layer else ())
        ]
        self.final_norm = None
        if self.normalize_first:
            self.final_norm = keras.layers.LayerNormalization(
                epsilon=1e-12, name="final_norm", dtype=self.dtype_policy
            )
        self.fusion_norm = None
        if kind == "hybrid" and fusion == "blend_norm":
            self.fusion_norm = keras.layers.LayerNormalization(
                epsilon=1e-12, name="fusion_norm", dtype=self.dtype_policy
            )
        self.gate = None
        gate_width = hidden_dim if gate_output == "vector" else 1
        if self.layer_fusion:
            gate_width *= num_layers  # one alpha (or one a unit) for each layer
        self.global_gate = bool(global_gate)
        if kind == "hybrid" and gate_mode in ("learned", "fixed") and self.global_gate:
            self.gate = GlobalGate(output_units=gate_width, name="gate", dtype=self.dtype_policy)
        elif kind == "hybrid" and gate_mode == "hidden_state":
            self.gate = HiddenStateGate(
                gate_units, output_units=gate_width, name="gate", dtype=self.dtype_policy
            )
        elif kind == "hybrid":
            self.gate = SequenceStatsGate(
                num_items,
                max_len,
                hidden_units=gate_units,
                use_statistics=gate_mode in ("statistics", "statistics_hidden"),
                features=self.gate_features,
                output_units=gate_width,
                context_dim=2 * hidden_dim if gate_mode == "statistics_hidden" else 0,
                name="gate",
                dtype=self.dtype_policy,
            )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.embedding.build(input_shape)
        hidden_shape = input_shape + (self.hidden_dim,)
        for block in self.trunk:
            block.build(hidden_shape)
        for blocks in self.stacks.values():
            for block in blocks:
                block.build(hidden_shape)
        for ffn in self.shared_ffns:
            ffn.build(hidden_shape)
        for norm in (self.final_norm, self.fusion_norm):
            if norm is not None:
                norm.build(hidden_shape)
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

    def _gate_alpha(self, item_ids, outputs):
        """The gate's alpha [B, L, 1 or d] for the branch outputs."""
        if isinstance(self.gate, HiddenStateGate):
            return self.gate(outputs["linrec"], outputs["fmlp"])
        if isinstance(self.gate, GlobalGate):
            return self.gate(item_ids)
        item_vectors = None
        if self.gate.needs_item_vectors:
            item_vectors = ops.take(self.item_embeddings, item_ids, axis=0)
        context = None
        if self.gate_mode == "statistics_hidden":
            context = ops.concatenate([outputs["linrec"], outputs["fmlp"]], axis=-1)
        return self.gate(item_ids, item_vectors=item_vectors, context=context)

    def _alpha(self, item_ids, outputs, fixed_alpha):
        """The gate's alpha [B, L, gate width], or ``fixed_alpha`` in its shape."""
        if fixed_alpha is None:
            return self._gate_alpha(item_ids, outputs)
        width = self.hidden_dim if self.gate_output == "vector" else 1
        width *= self.num_layers if self.layer_fusion else 1
        ones = ops.ones_like(ops.expand_dims(item_ids, -1), dtype=self.compute_dtype)
        return ops.tile(ones, (1, 1, width)) * float(fixed_alpha)

    def call(
        self,
        item_ids,
        training=None,
        return_alpha=False,
        return_branches=False,
        fixed_alpha=None,
    ):
        item_ids = ops.cast(item_ids, "int32")
        mask = ops.not_equal(item_ids, 0)
        x = self.embedding(item_ids, training=training)
        for block in self.trunk:
            x = block(x, mask=mask, training=training)
        if self.layer_fusion:
            alpha = self._alpha(item_ids, None, fixed_alpha)
            return self._blend_in_layers(x, mask, alpha, training, return_alpha, return_branches)
        outputs = {}
        for mixer, blocks in self.stacks.items():
            h = x
            for i, block in enumerate(blocks):
                h = block(h, mask=mask, training=training)
                if self.shared_ffns:
                    h = self.shared_ffns[i](h, training=training)
            outputs[mixer] = h
        if self.gate is None:
            hidden = outputs[self.kind]
            if self.final_norm is not None:
                hidden = self.final_norm(hidden)
            return (hidden, None) if return_alpha else hidden
        alpha = self._alpha(item_ids, outputs, fixed_alpha)
        hidden = alpha * outputs["linrec"] + (1.0 - alpha) * outputs["fmlp"]
        if self.fusion_norm is not None:
            hidden = self.fusion_norm(hidden)
        if return_branches:
            return dict(outputs, alpha=alpha, hidden=hidden)
        return (hidden, ops.mean(alpha, axis=-1)) if return_alpha else hidden

    def _blend_in_layers(self, x, mask, alpha, training, return_alpha, return_branches):
        """``fusion="layer"``: each layer blends its two mixers' outputs, then one FFN."""
        width = ops.shape(alpha)[-1] // self.num_layers
        layers = zip(self.stacks["linrec"], self.stacks["fmlp"], self.shared_ffns)
        mixed_by = {"linrec": [], "fmlp": []}
        for i, (linrec, fmlp, ffn) in enumerate(layers):
            a = alpha[..., i * width : (i + 1) * width]
            h_linrec = linrec(x, mask=mask, training=training)
            h_fmlp = fmlp(x, mask=mask, training=training)
            mixed_by["linrec"].append(h_linrec)
            mixed_by["fmlp"].append(h_fmlp)
            x = ffn(a * h_linrec + (1.0 - a) * h_fmlp, training=training)
        if return_branches:
            layers_axis = {name: ops.stack(h, axis=2) for name, h in mixed_by.items()}
            return dict(layers_axis, alpha=alpha, hidden=x)
        return (x, ops.mean(alpha, axis=-1)) if return_alpha else x

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
            gate_features=list(self.gate_features),
            gate_output=self.gate_output,
            fusion=self.fusion,
            share_ffn=self.share_ffn,
            shared_blocks=self.shared_blocks,
            global_gate=self.global_gate,
            normalize_first=self.normalize_first,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # A config without ``global_gate`` was saved before 4 December 2026, when a
        # learned or fixed alpha came from the statistics gate's MLP fed zeros: that
        # layout is rebuilt, so the file's weights load and give the same scores.
        return cls(**{"global_gate": False, **config})


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
    gate_mode=DEFAULT_GATE_MODE,
    gate_features=("basic",),
    gate_output="scalar",
    fusion="blend",
    share_ffn=False,
    shared_blocks=0,
    normalize_first=False,
    item_popularity=None,
    name=None,
    dtype=None,
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
        gate_mode: ``"learned"`` (the default: one learned alpha for every
            user), ``"statistics"`` (a per-user alpha from sequence
            statistics), ``"fixed"`` (alpha = 0.5, not trained) or ``"hidden_state"`` (a per-user,
            per-position alpha learned from the branch outputs, ignoring the
            statistics) or ``"statistics_hidden"`` (statistics and branch outputs).
        gate_features: statistics groups the gate reads (a tuple or a
            comma-separated string of ``basic``, ``trend``, ``recency``,
            ``diversity``, ``spectrum``).
        gate_output: ``"scalar"`` (one alpha a position) or ``"vector"`` (one
            alpha per hidden unit).
        fusion: ``"blend"``, ``"blend_norm"`` (LayerNorm after the blend,
            restoring the norm a blend of weakly correlated outputs loses) or
            ``"layer"`` (the blend inside every layer, one alpha a layer: one
            residual stream and one FFN a layer instead of two stacks; the gate
            reads statistics only, and nothing is shared or split further).
        share_ffn: the two branches share each layer's feed-forward network.
        shared_blocks: hybrid only: the first k < num_layers blocks are one
            FMLP-Rec trunk under both branches (k fewer blocks to run).
        normalize_first: single-stack encoders only: pre-LN blocks
            (``x + drop(mixer(LN(x)))``, the FFN likewise) and a LayerNorm
            after the last one, as the original SASRec code; post-LN (RecBole's
            SASRec, FMLP-Rec, LinRec) by default.
        item_popularity: optional training counts [num_items + 1] for the gate.
        dtype: a Keras dtype policy for every layer (e.g. ``"mixed_float16"``:
            float16 math on float32 weights); default: the global policy.

    Returns:
        A built ``SequenceEncoder``: [B, L] int ids -> [B, L, hidden_dim].

    Example:
    >>> encoder = build_encoder("hybrid", num_items=100, max_len=20)
    >>> tuple(encoder(np.ones((2, 20), "int32")).shape)
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
    if isinstance(gate_features, str):
        gate_features = tuple(g.strip() for g in gate_features.split(",") if g.strip())
    _require(
        bool(gate_features) and set(gate_features) <= set(GATE_FEATURE_GROUPS),
        "gate_features",
        f"must be groups of {GATE_FEATURE_GROUPS}, got {gate_features!r}",
    )
    _require(
        gate_output in GATE_OUTPUTS,
        "gate_output",
        f"must be one of {GATE_OUTPUTS}, got {gate_output!r}",
    )
    _require(fusion in FUSIONS, "fusion", f"must be one of {FUSIONS}, got {fusion!r}")
    if kind == "hybrid" and fusion == "layer":
        _require(
            gate_mode in LAYER_FUSION_GATE_MODES,
            "gate_mode",
            f"fusion='layer' gates before any layer runs, so one of {LAYER_FUSION_GATE_MODES}, "
            f"got {gate_mode!r}",
        )
        _require(not share_ffn, "share_ffn", "fusion='layer' already has one FFN a layer")
        _require(not shared_blocks, "shared_blocks", "fusion='layer' has one stack to share")
    _require(
        kind == "hybrid" or not shared_blocks,
        "shared_blocks",
        f"a {kind} encoder has one stack, nothing to share (got {shared_blocks})",
    )
    _require(
        0 <= int(shared_blocks) < int(num_layers),
        "shared_blocks",
        f"must be in 0..num_layers - 1 = {int(num_layers) - 1}, got {shared_blocks}",
    )
    _require(
        kind != "hybrid" or not normalize_first,
        "normalize_first",
        "is built for the single-stack encoders (linrec, fmlp, sasrec), not the hybrid",
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
        gate_features=tuple(gate_features),
        gate_output=gate_output,
        fusion=fusion,
        share_ffn=bool(share_ffn),
        shared_blocks=int(shared_blocks),
        normalize_first=bool(normalize_first),
        name=name or f"{kind}_encoder",
        dtype=dtype,
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
