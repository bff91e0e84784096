"""The version manager: a broken or empty version never takes the served one down (issue 16).

TensorFlow Serving's rules: serve the newest versions the policy selects among
those that load, report a failed version in GetModelStatus with its error, and
retry it when its files change.
"""

import shutil
import threading
import time

import pytest
from test_serving import HISTORIES, VOCABULARY, make_model, running_server

from hybrid_tfrs.export import export_saved_model
from hybrid_tfrs.serving.client import GrpcClient, RestClient
from hybrid_tfrs.serving.versions import ModelConfig, VersionManager


@pytest.fixture(scope="module")
def good_version(tmp_path_factory):
    """A loadable version folder, to copy."""
    root = tmp_path_factory.mktemp("export")
    export_saved_model(make_model(seed=1), VOCABULARY, str(root), "hybrid", version=1)
    return root / "hybrid" / "1"


def add_version(base_path, version, good_version, broken=False):
    """Copies the good version in as ``version`` (its saved_model.pb cut in half if broken);
    the copy is renamed into place, as an exporter does."""
    staging = base_path / f".staging-{version}"
    shutil.copytree(good_version, staging)
    if broken:
        pb = staging / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    staging.rename(base_path / str(version))


def manager(base_path, policy=None):
    return VersionManager(ModelConfig("hybrid", str(base_path), policy), max_rows=64, warmup=False)


def test_broken_and_empty_newer_versions_leave_the_served_one_and_are_reported(
    tmp_path, good_version
):
    add_version(tmp_path, 1, good_version)
    versions = manager(tmp_path)
    versions.poll()
    add_version(tmp_path, 2, good_version, broken=True)
    (tmp_path / "3").mkdir()
    versions.poll()
    assert sorted(versions.versions) == [1]
    rows = versions.status()
    assert [row[:3] for row in rows] == [
        (3, "END", "NOT_FOUND"),
        (2, "END", "DATA_LOSS"),
        (1, "AVAILABLE", "OK"),
    ]
    assert rows[0][3] == f"no saved_model.pb in {tmp_path / '3'}"
    assert "saved_model.pb cannot be parsed (truncated or corrupt)" in rows[1][3]


def test_a_failed_version_is_retried_only_when_its_files_change(tmp_path, good_version):
    add_version(tmp_path, 1, good_version)
    add_version(tmp_path, 2, good_version, broken=True)
    versions = manager(tmp_path)
    loads = []
    load = versions._load
    versions._load = lambda version, path: loads.append(version) or load(version, path)
    versions.poll()
    versions.poll()  # unchanged: not tried again
    assert loads == [2, 1] and sorted(versions.versions) == [1]
    shutil.copy(good_version / "saved_model.pb", tmp_path / "2" / "saved_model.pb")
    versions.poll()
    assert loads == [2, 1, 2] and sorted(versions.versions) == [2]
    assert versions.status() == [(2, "AVAILABLE", "OK", "")]


def test_policy_latest_two_serves_the_two_newest_that_load(tmp_path, good_version):
    for version, broken in ((1, False), (2, False), (3, True)):
        add_version(tmp_path, version, good_version, broken)
    versions = manager(tmp_path, ("latest", 2))
    versions.poll()
    assert sorted(versions.versions) == [1, 2]
    assert [row[:2] for row in versions.status()] == [
        (3, "END"),
        (2, "AVAILABLE"),
        (1, "AVAILABLE"),
    ]


def test_no_request_fails_while_a_broken_version_appears_under_load(tmp_path, good_version):
    base_path = tmp_path / "hybrid"
    base_path.mkdir()
    add_version(base_path, 1, good_version)
    flags = ("--file_system_poll_wait_seconds=0.1", "--enable_batching")
    with running_server(base_path, tmp_path / "server.log", *flags) as (_, grpc_port, rest_port):
        grpc_target, rest_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"
        stop, errors, answered = threading.Event(), [], []

        def loop(client):
            with client:
                while not stop.is_set():
                    try:
                        answered.append(client.recommend(HISTORIES[:1], k=3).version)
                    except Exception as error:  # noqa: BLE001 (collected for the assertion)
                        errors.append(error)

        clients = [GrpcClient(grpc_target, "hybrid"), GrpcClient(grpc_target, "hybrid")]
        threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
        threads.append(threading.Thread(target=loop, args=(RestClient(rest_url, "hybrid"),)))
        for thread in threads:
            thread.start()
        try:
            with GrpcClient(grpc_target, "hybrid") as watcher:
                deadline = time.monotonic() + 30
                while len(answered) < 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                add_version(base_path, 2, good_version, broken=True)
                while time.monotonic() < deadline and len(watcher.status()) < 2:
                    time.sleep(0.05)
                reported = len(answered)
                while len(answered) < reported + 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                status = watcher.status()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    assert not errors, errors[:3]
    assert len(answered) >= reported + 20 and set(answered) <= {1, None}  # REST names no version
    assert [(row["version"], row["state"], row["error_code"]) for row in status] == [
        (2, "END", "DATA_LOSS"),
        (1, "AVAILABLE", "OK"),
    ]
    assert "truncated or corrupt" in status[0]["error_message"]
