"""Parameter counts of the encoders (the item table included and excluded).

python benchmarks/parameters.py                    # the four models, ML-1M and Beauty, hidden 64
python benchmarks/parameters.py --hidden_dim=128 --catalogues=3416:200
python benchmarks/parameters.py --runs=hybrid,fmlp-4-layers,hybrid-layer-fusion-3-layers
    # campaign runs (a model or a benchmarks/campaign_plan.py ablation), each as its
    # flagfile and overrides build it, on ML-1M and Beauty
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("hidden_dim", 64, "Hidden size.")
flags.DEFINE_integer("num_layers", 2, "Layers per branch.")
flags.DEFINE_list(
    "catalogues", ["3416:200", "12101:50"], "num_items:max_len pairs (ML-1M, Beauty)."
)
flags.DEFINE_list(
    "runs",
    [],
    "Campaign runs to count instead, each from its dataset's flagfile with its overrides "
    "(benchmarks/campaign_plan.py): model names and ablation names.",
)
FLAGS = flags.FLAGS
# Items in the catalogues of the campaign's datasets (ids 1..N).
CAMPAIGN_ITEMS = {"ml-1m": 3416, "beauty": 12101}


def parameter_counts(encoder):
    """(trainable parameters, of which the item embedding's) of a built encoder."""
    total = sum(int(w.numpy().size) for w in encoder.trainable_weights)
    embedding = sum(int(w.numpy().size) for w in encoder.embedding.trainable_weights)
    return total, embedding


def run_encoder(dataset, name):
    """The encoder a campaign run (model or ablation ``name``) trains on ``dataset``, or
    None where the plan skips it there (run_plan says why)."""
    from campaign_plan import MODELS, flagfile_config, run_plan

    from hybrid_tfrs.run_model import config_encoder

    models, ablations = ([name], []) if name in MODELS else ([], [name])
    plan = run_plan([dataset], models, ablations, ["0"])
    if not plan:
        return None
    ((_, _, flagfile, overrides, _),) = plan
    return config_encoder(flagfile_config(flagfile, overrides), CAMPAIGN_ITEMS[dataset])


def main(_):
    from hybrid_tfrs import ENCODER_KINDS, build_encoder

    if FLAGS.runs:
        encoders = [
            (f"{dataset} {name}", encoder)
            for dataset in CAMPAIGN_ITEMS
            for name in FLAGS.runs
            if (encoder := run_encoder(dataset, name)) is not None
        ]
    else:
        encoders = [
            (
                kind,
                build_encoder(
                    kind,
                    num_items=num_items,
                    max_len=max_len,
                    hidden_dim=FLAGS.hidden_dim,
                    num_layers=FLAGS.num_layers,
                ),
            )
            for num_items, max_len in (map(int, pair.split(":")) for pair in FLAGS.catalogues)
            for kind in ENCODER_KINDS
        ]
    print("| items | max_len | model | trainable | of which embeddings | other layers |")
    print("|---|---|---|---|---|---|")
    for label, encoder in encoders:
        total, embedding = parameter_counts(encoder)
        print(
            f"| {encoder.num_items} | {encoder.max_len} | {label} | {total:,} | {embedding:,} | "
            f"{total - embedding:,} |"
        )


if __name__ == "__main__":
    app.run(main)
