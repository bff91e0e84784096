"""TensorFlow imported without its log lines (what every command and the client want)."""

import contextlib
import logging
import os
import re
import sys
import tempfile

from absl import logging as absl_logging

# What TensorFlow's C++ side writes to stderr while it loads, whatever TF_CPP_MIN_LOG_LEVEL says.
CPP_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ ]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)


def quiet_tensorflow(verbose=False):
    """Imports TensorFlow without its C++ and INFO log lines, unless ``verbose``.

    TF_CPP_MIN_LOG_LEVEL=3 silences TensorFlow once it runs (the cuInit error
    on a machine without GPU); the lines its libraries print while loading
    ignore it, so stderr is filtered during the import.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    level = logging.INFO if verbose else logging.ERROR
    with contextlib.nullcontext() if verbose else without_cpp_log_lines():
        import tensorflow  # noqa: F401
    logging.getLogger("tensorflow").setLevel(level)
    # TensorFlow's Python side logs its INFO lines (SavedModel export) through absl.
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)


@contextlib.contextmanager
def without_cpp_log_lines():
    """Sends file descriptor 2 to a temporary file, then replays all but C++ log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.writelines(
                line for line in text.splitlines(keepends=True) if not CPP_LOG_LINE.match(line)
            )
            sys.stderr.flush()
