"""Shared test settings: quiet TensorFlow, the real-data folder, subprocess helper."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


def run_python(code, env_overrides, timeout=600):
    """Runs ``code`` in a fresh interpreter with extra environment variables."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env_overrides)
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
