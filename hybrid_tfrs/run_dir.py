"""The output folder of a training run: what may be resumed, and writes that survive a kill.

Layout (see hybrid_tfrs.training)::

    config.json  vocabulary.txt  model.keras  metrics.json  test_ranks.npz
    checkpoints/last.keras  checkpoints/state.json  tensorboard/  .lock

A folder that holds a run is resumed only with the same settings (those in
``hybrid_tfrs.config.RESUMABLE_WITH_OTHER`` may differ); otherwise
:func:`check_run_dir` raises :class:`RunDirError` before anything is written.
Every file is written to a temporary name and renamed, so a kill leaves the old
file or the new one, never half of one. A training holds :func:`exclusive`'s
lock on the folder, so two never write it at once. Imports neither Keras nor
TensorFlow.
"""

import contextlib
import fcntl
import json
import os
import shutil

from hybrid_tfrs.config import TrainConfig

CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.txt"
BEST_MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
RANKS_FILE = "{split}_ranks.npz"  # per-user ranks, hybrid_tfrs.significance.write_ranks
TEST_RANKS_FILE = RANKS_FILE.format(split="test")
CHECKPOINT_DIR = "checkpoints"
LAST_MODEL_FILE = os.path.join(CHECKPOINT_DIR, "last.keras")
STATE_FILE = os.path.join(CHECKPOINT_DIR, "state.json")
TENSORBOARD_DIR = "tensorboard"
# What --noresume discards: every file a run writes, and nothing else.
RUN_FILES = (
    CONFIG_FILE,
    VOCABULARY_FILE,
    BEST_MODEL_FILE,
    METRICS_FILE,
    TEST_RANKS_FILE,
    "report.html",
    "evaluation.json",
    RANKS_FILE.format(split="valid"),  # hybrid-tfrs-evaluate --write_ranks
    CHECKPOINT_DIR,
    TENSORBOARD_DIR,
)
LOCK_FILE = ".lock"  # held by the training that writes the folder; see exclusive()
STATE_KEYS = frozenset({"best_score", "best_epoch", "waited", "epochs_done", "history"})
START_OVER = "rerun with --noresume to replace it, or choose a new --output_dir"


class RunDirError(ValueError):
    """The output folder cannot take this run (a file, another run's settings, a broken file)."""


def run_path(config, name):
    return os.path.join(config.output_dir, name)


def read_json(path):
    """A JSON file's content; RunDirError naming the file if it is missing or broken."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirError(f"{path}: unreadable ({error})") from None


def read_config(run_dir):
    """The TrainConfig a run folder's config.json holds; RunDirError naming the file."""
    path = os.path.join(run_dir, CONFIG_FILE)
    payload = read_json(path)
    try:
        return TrainConfig.from_json(payload)
    except (TypeError, ValueError) as error:
        raise RunDirError(f"{path}: not a config.json of this version ({error})") from None


def check_run_dir(config):
    """Checks that ``output_dir`` can take this run; returns the state to resume from, or None.

    Raises RunDirError if output_dir is a file, or holds a run with other
    settings (naming them) or with a broken config or state file.
    """
    _check_folder_can_be_written(config.output_dir)
    if not config.resume or not os.path.exists(run_path(config, CONFIG_FILE)):
        return None
    try:
        previous = read_config(config.output_dir)
    except RunDirError as error:
        raise RunDirError(f"{error}; {START_OVER}") from None
    differences = config.differences(previous)
    if differences:
        changed = ", ".join(
            f"--{name}={old!r} there, {new!r} now" for name, (old, new) in differences.items()
        )
        raise RunDirError(
            f"--output_dir={config.output_dir} holds a run with other settings ({changed}); "
            f"{START_OVER}"
        )
    state_path = run_path(config, STATE_FILE)
    if not os.path.exists(state_path):
        return None
    try:
        state = read_json(state_path)
    except RunDirError as error:
        raise RunDirError(f"{error}; {START_OVER}") from None
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        raise RunDirError(
            f"{state_path}: not a training state (needs {', '.join(sorted(STATE_KEYS))}); "
            f"{START_OVER}"
        )
    if not os.path.exists(run_path(config, LAST_MODEL_FILE)):
        raise RunDirError(f"{run_path(config, LAST_MODEL_FILE)}: no such file; {START_OVER}")
    return state


def _check_folder_can_be_written(folder):
    """RunDirError unless ``folder`` is, or can be created as, a writable folder."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunDirError(f"--output_dir={folder}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--output_dir={folder}: {existing} is not writable")


@contextlib.contextmanager
def exclusive(output_dir):
    """Holds an exclusive lock on ``output_dir`` (its ``.lock`` file, which
    names the holder's process id) while a training writes there.

    The operating system drops the lock when the process ends, however it
    ends (a kill included), so a stale lock never blocks a rerun. Raises
    RunDirError naming the folder and the holder if another process has it.
    """
    os.makedirs(output_dir, exist_ok=True)
    handle = open(os.path.join(output_dir, LOCK_FILE), "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirError(
            f"--output_dir={output_dir} is in use by another training (process {holder}); "
            "wait for it to finish or stop it, then rerun to resume"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock


def start_run_dir(config):
    """Creates output_dir; without --resume, first removes the files of an earlier run."""
    if not config.resume:
        for name in RUN_FILES:
            path = run_path(config, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(run_path(config, CHECKPOINT_DIR), exist_ok=True)


def write_json(path, payload):
    """Writes JSON to a temporary file, then renames it over ``path``."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(temporary, path)


def save_model(model, path):
    """``model.save(path)`` through a temporary ``.keras`` file and a rename."""
    temporary = f"{path[: -len('.keras')]}.tmp.keras"
    model.save(temporary)
    os.replace(temporary, path)


def save_vocabulary(vocabulary, path):
    temporary = f"{path}.tmp"
    vocabulary.save(temporary)
    os.replace(temporary, path)
