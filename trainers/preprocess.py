"""Kept for `python trainers/preprocess.py`: runs hybrid-tfrs-preprocess (cli.preprocess)."""

import os
import sys

if __package__ in (None, ""):  # run as a script: the repository root holds hybrid_tfrs
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hybrid_tfrs.cli.preprocess import run  # noqa: E402

if __name__ == "__main__":
    run()
