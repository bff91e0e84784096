"""``python -m serving.server``: the local TF Serving stand-in (``hybrid_tfrs.serving.server``)."""

from hybrid_tfrs.serving.server import run

if __name__ == "__main__":
    run()
