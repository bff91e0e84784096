"""The output folder of a training run: what may be resumed, and writes that survive a kill.

Layout (see hybrid_tfrs.training)::

    config.json  vocabulary.txt  model.keras  metrics.json  test_ranks.npz
    checkpoints/last-<epoch>.keras  checkpoints/state.json  tensorboard/  .lock

A folder that holds a run is resumed only with the same settings (those in
``hybrid_tfrs.config.RESUMABLE_WITH_OTHER`` may differ) and the same data;
otherwise :func:`check_run_dir` or :func:`check_same_data` raises
:class:`RunDirError` before anything is written. Every file is written to a
temporary name of its writer's own and renamed, so a kill leaves the old file
or the new one, never half of one; the state names the weights it goes with
(:func:`save_checkpoint`). A training holds :func:`exclusive`'s lock on the
folder, so two never write it at once. Imports neither Keras nor TensorFlow.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil

from hybrid_tfrs.config import TrainConfig, chief_in_tf_config
from hybrid_tfrs.data.vocabulary import Vocabulary

CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.txt"
BEST_MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
RANKS_FILE = "{split}_ranks.npz"  # per-user ranks, hybrid_tfrs.significance.write_ranks
TEST_RANKS_FILE = RANKS_FILE.format(split="test")
CHECKPOINT_DIR = "checkpoints"
LAST_MODEL_FILE = "last-{epoch}.keras"  # in CHECKPOINT_DIR, the state names it
OLD_LAST_MODEL_FILE = "last.keras"  # what a state file written before it names none meant
STATE_FILE = os.path.join(CHECKPOINT_DIR, "state.json")
TENSORBOARD_DIR = "tensorboard"
_TEMPORARY = r"(\.\d+\.tmp)?"  # write_atomically's temporary name (a kill can leave one)


def _written(*names):
    """The regex of these file names and of their temporary files."""
    parts = (os.path.splitext(name) for name in names)
    return "|".join(re.escape(stem) + _TEMPORARY + re.escape(ext) for stem, ext in parts)


_WEIGHTS = rf"last(-\d+)?{_TEMPORARY}\.keras"  # last-<epoch>.keras, and last.keras of old
# What --noresume discards: folder -> the regex of the names a run writes there, and
# nothing else (another tool's files in the same folders are kept).
RUN_FILES = {
    "": _written(
        CONFIG_FILE,
        VOCABULARY_FILE,
        BEST_MODEL_FILE,
        METRICS_FILE,
        TEST_RANKS_FILE,
        "report.html",
        "evaluation.json",
        RANKS_FILE.format(split="valid"),  # hybrid-tfrs-evaluate --write_ranks
    ),
    CHECKPOINT_DIR: f"{_written('state.json')}|{_WEIGHTS}",
    TENSORBOARD_DIR: "train|validation",  # keras.callbacks.TensorBoard's folders
}
LOCK_FILE = ".lock"  # held by the training that writes the folder; see exclusive()
# What a worker other than the chief says once training is done (the chief writes).
WORKER_DONE = "training done; the chief evaluates and writes the results"
STATE_KEYS = frozenset({"best_score", "best_epoch", "waited", "epochs_done", "history"})
START_OVER = "rerun with --noresume to replace it, or choose a new --output_dir"


class RunDirError(ValueError):
    """The output folder cannot take this run (a file, another run's settings, a broken file)."""


def run_path(config, name):
    return os.path.join(config.output_dir, name)


def _run_paths(config, folder, pattern):
    """The paths in output_dir's ``folder`` whose names match the regex ``pattern``."""
    path = run_path(config, folder)
    names = os.listdir(path) if os.path.isdir(path) else []
    return [os.path.join(path, name) for name in names if re.fullmatch(pattern, name)]


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

    Raises RunDirError if output_dir (or a local export_dir) is a file or not
    writable, or if output_dir holds a run with other
    settings (naming them) or with a broken config or state file.
    """
    _check_folder_can_be_written(config.output_dir)
    if config.export_dir:
        _check_folder_can_be_written(config.export_dir, "export_dir")
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
    try:
        state = read_state(config.output_dir)
    except RunDirError as error:
        raise RunDirError(f"{error}; {START_OVER}") from None
    if state is None:
        return None
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        raise RunDirError(
            f"{run_path(config, STATE_FILE)}: not a training state (needs "
            f"{', '.join(sorted(STATE_KEYS))}); {START_OVER}"
        )
    last_model = last_model_path(config, state)
    if not os.path.exists(last_model):
        raise RunDirError(f"{last_model}: no such file; {START_OVER}")
    return state


def read_state(folder):
    """The training state in a run ``folder`` (dict), or None when it has none;
    RunDirError naming a broken file."""
    path = os.path.join(folder, STATE_FILE)
    return read_json(path) if os.path.exists(path) else None


def stop_reason(state, config):
    """Why training should not go on: ``(kind, message)``, kind "patience" or
    "time budget"; None while it should."""
    if state["waited"] > config.patience:
        return "patience", f"no better validation NDCG@10 for {state['waited']} epochs"
    budget = config.max_train_minutes * 60.0
    if budget and state.get("elapsed_seconds", 0.0) >= budget:
        return "time budget", f"training time budget of {config.max_train_minutes:g} minutes spent"
    return None


def training_done(state, config):
    """Whether a run's state (None: no run yet) has nothing left to train."""
    return state is not None and (
        state["epochs_done"] >= config.epochs or bool(stop_reason(state, config))
    )


def nothing_left_here(config, state):
    """Whether this process is a worker other than the chief of a multi-worker run whose
    training is done (``state``): the chief evaluates and writes, it has nothing to do."""
    multi_worker = config.distribution_strategy == "multi_worker_mirrored"
    return multi_worker and training_done(state, config) and not chief_in_tf_config()


def last_model_path(config, state):
    """The weights file (with the optimizer) that a state file goes with."""
    name = state.get("last_model", OLD_LAST_MODEL_FILE)
    return run_path(config, os.path.join(CHECKPOINT_DIR, name))


def save_checkpoint(model, config, state):
    """Saves ``model`` as checkpoints/last-<epoch>.keras, then ``state`` naming it, then
    removes the older weights: a kill at any point leaves a state and the weights of
    the same epoch, so a resume goes on as if the run had never stopped."""
    name = LAST_MODEL_FILE.format(epoch=state["epochs_done"])
    save_model(model, run_path(config, os.path.join(CHECKPOINT_DIR, name)))
    state["last_model"] = name
    write_json(run_path(config, STATE_FILE), state)
    for path in _run_paths(config, CHECKPOINT_DIR, _WEIGHTS):
        if os.path.basename(path) != name:
            os.remove(path)


def check_same_data(config, state, summary, vocabulary):
    """RunDirError, before anything is written, if the run to resume was trained on
    other data than ``summary`` (:func:`hybrid_tfrs.run_data.data_summary`) describes."""
    if state is None:  # nothing to resume: the run starts afresh
        return
    changed = data_changes(config.output_dir, state, summary, vocabulary)
    if changed:
        raise RunDirError(
            f"--output_dir={config.output_dir} holds a run trained on other data "
            f"({changed}); {START_OVER}"
        )


def data_changes(folder, state, summary, vocabulary):
    """How the data of ``summary`` (:func:`hybrid_tfrs.run_data.data_summary`) and
    ``vocabulary`` (its :class:`~hybrid_tfrs.data.Vocabulary`) differ from the data the
    run in ``folder`` was trained on, in words; "" when they do not, or nothing says.

    ``state``: the run's training state, or None. A state written before summaries
    were kept, or none, is checked by the run's vocabulary.txt."""
    earlier = (state or {}).get("data")
    if earlier == summary:
        return ""
    if earlier is not None:
        changed = [
            f"{name} {earlier[name]} there, {summary[name]} now"
            for name in ("users", "items", "interactions")
            if earlier.get(name) != summary[name]
        ]
        return "; ".join(changed) or (
            "the same numbers of users, items and events, but other item ids or counts"
        )
    path = os.path.join(folder, VOCABULARY_FILE)
    if not os.path.exists(path):
        return ""
    earlier_vocabulary = Vocabulary.load(path)  # DataError naming a broken file
    if earlier_vocabulary == vocabulary:
        return ""
    sizes = len(earlier_vocabulary), len(vocabulary)
    if sizes[0] == sizes[1]:
        return f"its {VOCABULARY_FILE} names other items than the data"
    return f"its {VOCABULARY_FILE} has {sizes[0]} items, the data {sizes[1]}"


def _check_folder_can_be_written(folder, flag="output_dir"):
    """RunDirError naming ``--flag`` unless ``folder`` is, or can be created as, a
    writable folder."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunDirError(f"--{flag}={folder}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--{flag}={folder}: {existing} is not writable")


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
    """Creates output_dir; without --resume, first removes the files of an earlier run
    (``RUN_FILES``), and only those."""
    if not config.resume:
        for folder, pattern in RUN_FILES.items():
            for path in _run_paths(config, folder, pattern):
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
    os.makedirs(run_path(config, CHECKPOINT_DIR), exist_ok=True)


def write_atomically(path, write):
    """``write(temporary)``, then the temporary file renamed over ``path``: a kill leaves
    the old file or the new one. The temporary name is this process's own (two writers,
    e.g. an evaluation beside a training, never share one), and a failed write (a full
    disk) removes it; an OSError that names no file then names ``path``."""
    stem, extension = os.path.splitext(path)
    temporary = f"{stem}.{os.getpid()}.tmp{extension}"
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror or str(error), path) from error
        raise


def write_json(path, payload):
    """Writes JSON to ``path`` atomically."""

    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)

    write_atomically(path, write)


def save_model(model, path):
    """``model.save(path)``, atomically (``path`` ends in ``.keras``)."""
    write_atomically(path, model.save)


def save_vocabulary(vocabulary, path):
    write_atomically(path, vocabulary.save)
