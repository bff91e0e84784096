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
