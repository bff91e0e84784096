"""Parameter counts of the four encoders (the item table included and excluded).

python benchmarks/parameters.py                    # ML-1M and Beauty sizes, hidden 64
python benchmarks/parameters.py --hidden_dim=128 --catalogues=3416:200
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("hidden_dim", 64, "Hidden size.")
flags.DEFINE_integer("num_layers", 2, "Layers per branch.")
flags.DEFINE_list(
    "catalogues", ["3416:200", "12101:50"], "num_items:max_len pairs (ML-1M, Beauty)."
)
FLAGS = flags.FLAGS


def main(_):
    from hybrid_tfrs import ENCODER_KINDS, build_encoder

    print("| items | max_len | model | trainable | of which embeddings | other layers |")
    print("|---|---|---|---|---|---|")
    for pair in FLAGS.catalogues:
        num_items, max_len = (int(v) for v in pair.split(":"))
        for kind in ENCODER_KINDS:
            encoder = build_encoder(
                kind,
                num_items=num_items,
                max_len=max_len,
                hidden_dim=FLAGS.hidden_dim,
                num_layers=FLAGS.num_layers,
            )
            total = sum(int(w.numpy().size) for w in encoder.trainable_weights)
            embedding = sum(int(w.numpy().size) for w in encoder.embedding.trainable_weights)
            print(
                f"| {num_items} | {max_len} | {kind} | {total:,} | {embedding:,} | "
                f"{total - embedding:,} |"
            )


if __name__ == "__main__":
    app.run(main)
