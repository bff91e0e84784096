"""The state of a model's random streams (dropout, sampled negatives) across a resume.

Keras keeps each ``keras.random.SeedGenerator``'s state (seed, counter) in a
variable that ``model.save`` leaves out, so a reloaded model would draw its
dropout masks from the start again (the masks of epoch 1). A training run
saves :func:`seed_states` beside its last checkpoint and puts them back with
:func:`restore_seed_states` when it resumes.
"""

import numpy as np


def _seed_variables(model):
    """The model's SeedGenerator state variables, in the model's (fixed) variable order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def seed_states(model):
    """Each SeedGenerator's state as ``[seed, counter]`` ints (JSON-ready), in order."""
    return [[int(x) for x in np.asarray(v.numpy())] for v in _seed_variables(model)]


def restore_seed_states(model, states):
    """Puts back states from :func:`seed_states` of a model of the same architecture.

    Raises ValueError if the number of generators differs (another architecture).
    """
    variables = _seed_variables(model)
    if len(states) != len(variables):
        raise ValueError(
            f"{len(states)} saved random-stream states for a model with {len(variables)}"
        )
    for variable, state in zip(variables, states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))
