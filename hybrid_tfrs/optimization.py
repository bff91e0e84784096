"""Optimizer and learning-rate schedule of a training run (``keras.ops``).

``WarmupDecay`` rises linearly from 0 to the peak learning rate over
``warmup_steps``, then stays there (``constant``) or decays to
``final_ratio * peak`` over ``decay_steps`` (``cosine`` or ``linear``), and
stays at that floor afterwards. ``make_optimizer`` puts it into Adam (AdamW
with weight decay) with optional global-norm gradient clipping.
"""

import math

from hybrid_tfrs.backend import keras, ops
from hybrid_tfrs.config import LR_SCHEDULES


@keras.saving.register_keras_serializable(package="hybrid_tfrs")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then constant, cosine or linear decay to a floor.

    Args:
        peak: learning rate after warmup.
        warmup_steps: steps of the linear rise from 0 (0 = start at ``peak``).
        decay_steps: steps of the decay after warmup (ignored for ``constant``).
        kind: ``"constant"``, ``"cosine"`` or ``"linear"``.
        final_ratio: learning rate at the end of the decay, as a share of ``peak``.

    Example:
        >>> schedule = WarmupDecay(1e-3, warmup_steps=100, decay_steps=900, kind="cosine")
        >>> round(float(schedule(100)), 6)  # the peak
        0.001
    """

    def __init__(self, peak, warmup_steps=0, decay_steps=1, kind="constant", final_ratio=0.0):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"kind must be one of {LR_SCHEDULES}, got {kind!r}")
        if peak <= 0 or warmup_steps < 0 or decay_steps < 1 or not 0 <= final_ratio <= 1:
            raise ValueError(
                "need peak > 0, warmup_steps >= 0, decay_steps >= 1 and final_ratio in [0, 1]; "
                f"got {peak}, {warmup_steps}, {decay_steps}, {final_ratio}"
            )
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.kind = kind
        self.final_ratio = float(final_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.minimum((step + 1.0) / max(self.warmup_steps, 1), 1.0)
        progress = ops.clip((step - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = ops.ones_like(progress)
        decayed = self.final_ratio + (1.0 - self.final_ratio) * shape
        in_warmup = ops.less(step, self.warmup_steps)
        return self.peak * ops.where(in_warmup, warmup, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "kind": self.kind,
            "final_ratio": self.final_ratio,
        }


def make_optimizer(
    learning_rate,
    weight_decay=0.0,
    schedule="constant",
    warmup_steps=0,
    decay_steps=1,
    final_ratio=0.0,
    clipnorm=0.0,
):
    """Adam (AdamW if ``weight_decay``) over a ``WarmupDecay`` learning rate.

    A constant rate without warmup stays a plain float. ``clipnorm`` > 0 clips
    the global norm of each step's gradients.
    """
    rate = learning_rate
    if schedule != "constant" or warmup_steps:
        rate = WarmupDecay(learning_rate, warmup_steps, decay_steps, schedule, final_ratio)
    clipping = {"global_clipnorm": clipnorm} if clipnorm else {}
    if weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay, **clipping)
    return keras.optimizers.Adam(rate, **clipping)
