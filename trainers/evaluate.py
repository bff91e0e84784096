"""Kept for `python trainers/evaluate.py`: runs hybrid-tfrs-evaluate (hybrid_tfrs.cli.evaluate)."""

import os
import sys

if __package__ in (None, ""):  # run as a script: the repository root holds hybrid_tfrs
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hybrid_tfrs.cli.evaluate import run  # noqa: E402

if __name__ == "__main__":
    run()
