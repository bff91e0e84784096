"""The campaign's runs: each model's flagfile and the hybrid's ablations as flag overrides.

A run is ``flags/<dataset>_<model>.flags`` plus overrides, parsed with the trainer's
own flags (``flagfile_config``), so the accuracy campaign (benchmarks/accuracy.py)
and the epoch-time benchmark (benchmarks/epoch_cost.py) run the same configurations.
"""

import os

from absl import app, flags

from hybrid_tfrs.config import GATE_VARIANTS, STATISTICS_GATE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("hybrid", "linrec", "fmlp", "sasrec")
SAME_AS_HYBRID = "same as hybrid"  # an override filled in per run: the hybrid's train minutes
# The hybrid's block layouts. The Beauty and ML-1M flagfiles run the filter trunk since
# 5 December 2026 (benchmarks/results/gate.md section 24); before, two 2-block stacks. The
# gate and layout ablations measured on two stacks say so (TWO_STACKS), and so do the
# "-batch-loss" runs (the recipe before 3 December), so their records stay theirs; the
# recipe A/Bs change one flag of today's flagfile.
FILTER_TRUNK = {"num_layers": "3", "shared_blocks": "2"}  # 2 shared FMLP-Rec blocks, 1 of each
TWO_STACKS = {"num_layers": "2", "shared_blocks": "0"}  # a 2-block stack of each branch
# name -> the flags that turn the hybrid's flagfile into the ablation ("model": another
# model's flagfile; "only_datasets": the datasets it applies to, comma-separated;
# "skip_if_flagfile_has": a flag whose value, when the flagfile already has it, makes the
# ablation a copy of another one there).
ABLATIONS = {
    "hybrid-two-stacks": dict(TWO_STACKS),  # the flagfiles' hybrid until 5 December 2026
    "hybrid-fixed-alpha": {**TWO_STACKS, "gate_mode": "fixed"},  # alpha = 0.5 for everyone
    "hybrid-hidden-alpha": {**TWO_STACKS, "gate_mode": "hidden_state"},  # per-user alpha
    # each branch trained as a query too
    "hybrid-branch-loss": {**TWO_STACKS, "branch_loss_weight": "0.5"},
    # The fusion variants of docs/model.md#the-gate, as flag values.
    **{
        name: {
            **TWO_STACKS,
            **{k: str(v).lower() if isinstance(v, bool) else v for k, v in fields.items()},
        }
        for name, fields in GATE_VARIANTS.items()
    },
    # Recipe A/B (issue 12): one change to the training recipe each.
    "hybrid-cosine-60": {  # warmup 1 epoch, cosine to 5 % of the peak over 60 epochs
        "lr_schedule": "cosine",
        "warmup_epochs": "1",
        "decay_epochs": "60",
        "final_lr_ratio": "0.05",
    },
    "hybrid-cosine-25": {  # the same decay over 25 epochs, within reach of patience 10
        "lr_schedule": "cosine",
        "warmup_epochs": "1",
        "decay_epochs": "25",
        "final_lr_ratio": "0.05",
    },
    "hybrid-target-loss": {"loss_normalization": "target"},  # every target weighs the same
    # ... and the baselines under the same recipe
    "fmlp-target-loss": {"model": "fmlp", "loss_normalization": "target"},
    "sasrec-target-loss": {"model": "sasrec", "loss_normalization": "target"},
    "linrec-target-loss": {"model": "linrec", "loss_normalization": "target"},
    "hybrid-no-seen-bias": {"seen_item_bias": "false"},  # no learned offset for seen items
    "fmlp-no-seen-bias": {"model": "fmlp", "seen_item_bias": "false"},  # its FMLP pair
    "hybrid-lr-5e-4": {  # BSARec's constant rate on Beauty
        "learning_rate": "0.0005",
        "lr_schedule": "constant",
        "warmup_epochs": "0",
        "decay_epochs": "0",
    },
    # Beauty's target is full-unseen: pick the best epoch by that protocol, with and
    # without the seen-item offset (which full-unseen makes moot at ranking time)
    "hybrid-unseen-validation": {"validation_protocol": "full-unseen"},
    "hybrid-no-bias-unseen-validation": {
        "seen_item_bias": "false",
        "validation_protocol": "full-unseen",
    },
    "fmlp-no-bias-unseen-validation": {
        "model": "fmlp",
        "seen_item_bias": "false",
        "validation_protocol": "full-unseen",
    },
    "hybrid-adamw": {"weight_decay": "0.01"},  # AdamW, decoupled decay 0.01
    "hybrid-clipnorm": {"clipnorm": "1.0"},  # each step's gradients clipped to global norm 1
    "hybrid-batch-64": {"batch_size": "64"},  # four times the updates an epoch on Beauty
    # Capacity-matched baselines ("model" picks the flagfile): within 5 % of the hybrid's
    # trainable parameters, 4-block SASRec on Beauty the most above it (+4.3 %; the others
    # -1.4 % to +2.7 %; benchmarks/parameters.py --runs=hybrid,fmlp-4-layers,...).
    "fmlp-4-layers": {"model": "fmlp", "num_layers": "4"},
    "sasrec-4-layers": {"model": "sasrec", "num_layers": "4"},
    # ML-1M's flagfiles have no warmup; 4-block SASRec at lr 2e-3 without one stayed at
    # validation NDCG@10 0.02 for 4 epochs (2 blocks: 0.15), so it gets Beauty's 1 epoch
    "sasrec-4-layers-warmup": {
        "model": "sasrec",
        "num_layers": "4",
        "warmup_epochs": "1",
        "only_datasets": "ml-1m",
    },
    # On Beauty the post-LN 4-block SASRec does not train (validation NDCG@10 0.011 at
    # epoch 12 against 2 blocks' 0.045; no better with 3 epochs of warmup, dropout 0.3 or
    # lr 5e-4): the original SASRec code's pre-LN layout does (benchmarks/results/convergence.md).
    # Seed 0 was still gaining at the flagfile's 200-epoch cap (best epoch 195), so its cap is
    # 400; every other Beauty run stops on patience before epoch 125. Raising --epochs resumes a
    # run that stopped at the cap from its checkpoint (--epochs may change on a resume).
    "sasrec-4-layers-pre-ln": {
        "model": "sasrec",
        "num_layers": "4",
        "normalize_first": "true",
        "epochs": "400",
    },
    # ... and the 2-block SASRec baseline in that layout, so the baseline is not held back
    "sasrec-pre-ln": {"model": "sasrec", "normalize_first": "true"},
    # 4-block FMLP-Rec trains post-LN but is below 2 blocks on Beauty: does pre-LN lift it?
    "fmlp-4-layers-pre-ln": {"model": "fmlp", "num_layers": "4", "normalize_first": "true"},
    # A hybrid as deep as fmlp-4-layers for the same parameters (ML-1M 420,739 against
    # 416,704; Beauty 938,179 against 924,544): the blend inside each of 3 layers, one
    # learned alpha a layer. The two stacks spend them on a 2-block stack of each branch.
    "hybrid-layer-fusion-3-layers": {**TWO_STACKS, "fusion": "layer", "num_layers": "3"},
    # Issue 13's cost: the two stacks (one learned alpha) with one FMLP-Rec block under
    # both branches, then one block of each (its epoch about 1.2x FMLP-Rec's, the stacks'
    # about 1.5x: benchmarks/results/gate.md, sections 4 and 11)
    "hybrid-shared-first-block": {**TWO_STACKS, "shared_blocks": "1"},
    # Issue 12's ML-1M gap: 4 FMLP-Rec blocks beat the hybrid's two 2-block branches there,
    # so depth may be what counts. This hybrid reads a 2-block FMLP-Rec trunk, then one block
    # of each branch: depth 3, four blocks in all (ML-1M 420,417 parameters against
    # fmlp-4-layers' 416,704; Beauty 937,857 against 924,544), and about their epoch. The
    # flagfiles' hybrid since 5 December 2026, so the campaign skips it as that copy; kept
    # for the commands of gate.md sections 22-23 and epoch_cost.md, which name it.
    "hybrid-filter-trunk": FILTER_TRUNK,
    # ... and its FMLP-Rec path trained alone (3 blocks, 50k fewer parameters than
    # the trunk on ML-1M): what the LinRec block and the blend add at the trunk's depth
    "fmlp-3-layers": {"model": "fmlp", "num_layers": "3"},
    # ... one block deeper (3 shared FMLP-Rec blocks, then one of each: depth 4, five blocks),
    # against FMLP-Rec with five: does the LinRec block pay at greater depth? (issue 12)
    "hybrid-filter-trunk-4-layers": {"num_layers": "4", "shared_blocks": "3"},
    "fmlp-5-layers": {"model": "fmlp", "num_layers": "5"},
    # ... with alpha fixed at 0.5: what its learned alpha is worth (issue 13's gate ablation)
    "hybrid-filter-trunk-fixed-alpha": {**FILTER_TRUNK, "gate_mode": "fixed"},
    # ... and with the statistics gate: what a per-user alpha adds on the trunk
    "hybrid-filter-trunk-statistics-gate": {**FILTER_TRUNK, **STATISTICS_GATE},
    # papers' layers trained on the last position of each prefix, for as long as the hybrid
    "hybrid-last-position": {"causal": "false", "max_train_minutes": SAME_AS_HYBRID},
    # only each history's latest max_len targets (the ML-1M flagfiles train them all)
    "hybrid-latest-window": {"window_stride": "0"},
    # every target trained with at least 100 items of context (ML-1M's flagfile: stride 200)
    "hybrid-stride-100": {"window_stride": "100", "only_datasets": "ml-1m"},
}

# Baselines with about the hybrid's parameters, and the hybrid variants built to match them
# (besides the default hybrid): each such baseline is also tested against each such hybrid.
CAPACITY_MATCHED_BASELINES = (
    "fmlp-4-layers",
    "sasrec-4-layers",
    "sasrec-4-layers-warmup",
    "sasrec-4-layers-pre-ln",
    "fmlp-4-layers-pre-ln",
)
CAPACITY_MATCHED_HYBRIDS = ("hybrid-two-stacks", "hybrid-layer-fusion-3-layers")
# Baselines of another size than the default hybrid -> the hybrids built to match them
# (within 5 % of their parameters), which the page also tests against them.
MATCHED_HYBRIDS = {"fmlp-5-layers": ("hybrid-filter-trunk-4-layers",)}

# The Beauty and ML-1M flagfiles weigh every target the same (--loss_normalization=target)
# since 3 December 2026. "<model or ablation>-batch-loss" is that run with each batch's mean,
# as the runs before that day were trained: a hybrid one on two stacks, and a hybrid A/B
# also keeps the statistics gate it was trained with, the default until 4 December 2026
# (hybrid-batch-loss itself is the default hybrid of 4 December, one learned alpha, with
# the mean). Where a flagfile still takes the mean it would repeat the run without the
# suffix, so it is skipped there ("skip_if_flagfile_has").
BATCH_LOSS = "-batch-loss"
ABLATIONS.update(
    {
        f"{name}{BATCH_LOSS}": {
            **(TWO_STACKS if name.startswith("hybrid") and "model" not in fields else {}),
            **(STATISTICS_GATE if name.startswith("hybrid-") and "model" not in fields else {}),
            **fields,
            "loss_normalization": "batch",
            "skip_if_flagfile_has": "loss_normalization",
        }
        for name, fields in [
            *((model, {} if model == "hybrid" else {"model": model}) for model in MODELS),
            *ABLATIONS.items(),
        ]
        # hybrid-two-stacks's run with the mean is hybrid-batch-loss
        if "loss_normalization" not in fields and name != "hybrid-two-stacks"
    }
)


def run_plan(datasets, models, ablations, seeds):
    """[(dataset, name, flagfile, overrides dict, seed)] of every run to make."""
    plan = []
    for dataset in datasets:
        named = [(m, m, {}) for m in models]
        for name in ablations:
            overrides = dict(ABLATIONS[name])
            only = overrides.pop("only_datasets", None)
            if only is not None and dataset not in only.split(","):
                print(f"{dataset} {name}: skipped, for {only} only", flush=True)
                continue
            named.append((name, overrides.pop("model", "hybrid"), overrides))
        for name, model, overrides in named:
            flagfile = os.path.join("flags", f"{dataset}_{model}.flags")
            if not os.path.exists(os.path.join(REPO, flagfile)):
                raise app.UsageError(f"no flagfile {flagfile} for {dataset} {model}")
            defining = overrides.pop("skip_if_flagfile_has", None)
            checked = overrides if defining is None else {defining: overrides[defining]}
            if checked and changes_nothing(checked, flagfile):
                given = " ".join(f"--{key}={value}" for key, value in checked.items())
                print(f"{dataset} {name}: skipped, {flagfile} already has {given}", flush=True)
                continue
            for seed in seeds:
                plan.append((dataset, name, flagfile, overrides, int(seed)))
    return plan


def flagfile_config(flagfile, overrides):
    """The TrainConfig the trainer would run for ``flagfile`` with ``overrides``, parsed by
    the trainer's own flags (so 5e-4 and 0.0005, --flag and --flag=true, are one value).
    UsageError naming the flagfile for a flag it does not have or a value it refuses."""
    from hybrid_tfrs.cli.train_flags import config_from_flags, define_train_flags

    trainer_flags = flags.FlagValues()
    define_train_flags(trainer_flags)
    argv = ["train", f"--flagfile={os.path.join(REPO, flagfile)}"]
    try:
        trainer_flags([*argv, *(f"--{name}={value}" for name, value in overrides.items())])
    except flags.Error as error:
        raise app.UsageError(f"{flagfile} with {overrides}: {error}") from error
    return config_from_flags(trainer_flags)


def changes_nothing(overrides, flagfile):
    """Whether the flagfile's run already is the run with these overrides. One filled in per
    run ("same as hybrid") always changes it; the others are parsed all the same."""
    known = {name: value for name, value in overrides.items() if value != SAME_AS_HYBRID}
    same = flagfile_config(flagfile, known) == flagfile_config(flagfile, {})
    return same and len(known) == len(overrides)
