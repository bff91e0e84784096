"""Writes to a run folder: all or nothing, whatever stops them."""

import errno
import json

import pytest

from hybrid_tfrs import run_dir


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "metrics.json"
    run_dir.write_json(str(path), {"epoch": 1})
    with pytest.raises(TypeError):  # fails half-way, as a full disk would
        run_dir.write_json(str(path), {"epoch": 2, "not JSON": object()})
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_full_disk_is_named_by_the_file_being_written(tmp_path):
    def full_disk(temporary):
        open(temporary, "w").close()
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it

    path = str(tmp_path / "model.keras")
    with pytest.raises(OSError) as raised:
        run_dir.write_atomically(path, full_disk)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, path)
    assert not list(tmp_path.iterdir())


class _Weights:
    """Stands in for a Keras model: ``save`` writes a file."""

    def save(self, path):
        with open(path, "w") as handle:
            handle.write("weights")


def test_noresume_and_checkpoints_remove_only_the_runs_files_whatever_the_folders_name(tmp_path):
    from hybrid_tfrs.config import TrainConfig

    run = tmp_path / "run [seed*1]"  # glob characters in the folder's name
    leftovers = ["config.json", "metrics.json", "model.4242.tmp.keras"]  # and a kill's
    leftovers += ["checkpoints/last-3.keras", "checkpoints/last.keras"]
    leftovers += ["checkpoints/state.json", "checkpoints/state.4242.tmp.json"]
    leftovers += ["tensorboard/train/events.out.tfevents.1"]
    theirs = ["checkpoints/my_model.ckpt", "checkpoints/last_good.keras", "notes.txt"]
    theirs += ["tensorboard/events.mine", "model.keras.bak"]
    for name in leftovers + theirs:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(name)
    config = TrainConfig(output_dir=str(run), resume=False)

    run_dir.start_run_dir(config)
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == sorted(theirs)

    for epoch in (1, 2):
        run_dir.save_checkpoint(_Weights(), config, {"epochs_done": epoch})
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state == {"epochs_done": 2, "last_model": "last-2.keras"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last-2.keras",
        "last_good.keras",
        "my_model.ckpt",
        "state.json",
    ]
