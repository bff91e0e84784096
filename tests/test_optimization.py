"""Learning-rate schedule and optimizer of a run."""

import keras
import numpy as np
import pytest

from hybrid_tfrs.optimization import WarmupDecay, make_optimizer


def rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


@pytest.mark.parametrize(
    "kind, middle, end",
    [("constant", 1.0, 1.0), ("cosine", 0.55, 0.1), ("linear", 0.55, 0.1)],
)
def test_warmup_then_decay_to_the_floor(kind, middle, end):
    schedule = WarmupDecay(2.0, warmup_steps=4, decay_steps=10, kind=kind, final_ratio=0.1)
    np.testing.assert_allclose(rates(schedule, range(4)), [0.5, 1.0, 1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(
        rates(schedule, [4, 9, 14, 100]), [2.0, 2 * middle, 2 * end, 2 * end], rtol=1e-5
    )


def test_decay_is_monotone_and_without_warmup_starts_at_the_peak():
    for kind in ("cosine", "linear"):
        values = rates(WarmupDecay(1.0, decay_steps=50, kind=kind), range(60))
        assert values[0] == 1.0 and np.all(np.diff(values) <= 1e-7) and values[-1] == 0.0


def test_schedule_and_clipping_survive_a_save(tmp_path):
    optimizer = make_optimizer(1e-3, schedule="cosine", warmup_steps=3, decay_steps=7, clipnorm=1.0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").optimizer.get_config()
    assert loaded["global_clipnorm"] == 1.0
    schedule = keras.saving.deserialize_keras_object(loaded["learning_rate"])
    assert isinstance(schedule, WarmupDecay)
    assert schedule.get_config() == optimizer.get_config()["learning_rate"]["config"]


def test_plain_settings_give_plain_adam_and_bad_ones_are_refused():
    optimizer = make_optimizer(1e-3)
    assert type(optimizer) is keras.optimizers.Adam and optimizer.global_clipnorm is None
    assert type(make_optimizer(1e-3, weight_decay=0.01)) is keras.optimizers.AdamW
    with pytest.raises(ValueError, match="kind must be one of"):
        WarmupDecay(1.0, kind="step")
    with pytest.raises(ValueError, match="decay_steps >= 1"):
        WarmupDecay(1.0, decay_steps=0, kind="cosine")
