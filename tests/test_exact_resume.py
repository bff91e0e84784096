"""A run stopped and resumed trains exactly as one that was never stopped.

A resume restores the weights and the optimizer from the ``last-<epoch>.keras``
that the state file names (not a newer one a kill left unnamed); the
dropout streams (Keras does not save a ``SeedGenerator``'s state) and the
epoch's place in the tf.data shuffle come from the run's state file.
"""

import os

import keras
import numpy as np
import pytest
from conftest import losses_and_scores, straight_and_resumed

from hybrid_tfrs import run_dir
from hybrid_tfrs.random_state import restore_seed_states, seed_states
from hybrid_tfrs.training import load_run_model

SETTINGS = dict(
    synthetic_users=200,
    synthetic_items=300,
    max_len=20,
    hidden_dim=16,
    dropout=0.5,  # large, so a dropout stream that restarts shows in the loss
    lr_schedule="cosine",
    warmup_epochs=1.0,
    decay_epochs=4.0,  # over the 4 epochs; the resume must go on along the same curve
    patience=10,
    protocols="full",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 4 epochs, once straight through and once as 2 + 2 after a restart
    (from the straight run's files after epoch 2)."""
    folder = tmp_path_factory.mktemp("runs")
    whole, parts, lines = straight_and_resumed(folder, SETTINGS)
    return whole, parts, lines, str(folder / "straight"), str(folder / "resumed")


def test_a_resumed_run_has_the_losses_and_scores_of_an_uninterrupted_one(runs):
    whole, parts, lines, _, _ = runs
    assert any(line.startswith("resuming after epoch 2") for line in lines)
    assert [row["epoch"] for row in parts["history"]] == [1, 2, 3, 4]
    np.testing.assert_allclose(losses_and_scores(parts), losses_and_scores(whole), rtol=1e-5)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(runs):
    *_, straight, resumed = runs
    for folder in (straight, resumed):  # the weights the last state names, and only those
        names = sorted(os.listdir(os.path.join(folder, run_dir.CHECKPOINT_DIR)))
        assert names == ["last-4.keras", "state.json"], (folder, names)
    ends = [
        load_run_model(os.path.join(folder, run_dir.CHECKPOINT_DIR, "last-4.keras"))
        for folder in (straight, resumed)
    ]
    for a, b in zip(ends[0].weights, ends[1].weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_random_streams_are_put_back_only_into_a_model_with_as_many():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5)])
    model(np.ones((2, 4)), training=True)  # draws once: the counter moves on
    states = seed_states(model)
    assert len(states) == 1 and states[0][1] == 1
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5)])
    restore_seed_states(fresh, states)
    assert seed_states(fresh) == states
    with pytest.raises(ValueError, match="2 saved random-stream states for a model with 1"):
        restore_seed_states(fresh, states * 2)
