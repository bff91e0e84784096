"""Entry points kept at the repository's top level; the code is ``hybrid_tfrs.serving``."""
