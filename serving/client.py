"""``python -m serving.client``: the serving client (``hybrid_tfrs.serving.client``)."""

from hybrid_tfrs.serving.client import run

if __name__ == "__main__":
    run()
