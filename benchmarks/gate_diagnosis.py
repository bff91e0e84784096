"""What the hybrid's gate does on real data: each branch's share, alpha by length and feature.

For every trained hybrid run given, on its test users (the query at each
user's last item):

1. each branch alone: NDCG@10 when the target is ranked with the LinRec
   branch's output alone, the FMLP branch's alone, and the blend (the model),
   under ``full`` and ``full-unseen`` (hybrid_tfrs.evaluation.target_ranks);
2. each branch's share of the query and of the target's score: norms
   |alpha * h_lin| and |(1 - alpha) * h_fmlp|, the target's score split into
   (alpha * h_lin) . e and ((1 - alpha) * h_fmlp) . e, and the cosine between
   the two branch outputs (a blend of weakly correlated outputs is shorter
   than either);
3. alpha and each branch's NDCG@10 by true history length;
4. the gate's input features: their spread on this data and how alpha
   follows them (Pearson correlation, mean alpha in the lowest and highest
   quartile);
5. what a gate could gain from these branches: the blend
   ``a * h_lin + (1 - a) * h_fmlp`` with one fixed ``a`` for every user, swept
   over ``--sweep_alphas``; the best ``a`` overall, the best ``a`` in each
   length bucket (true history length, past the window too), and the NDCG@10
   if each bucket used its own best (chosen on the same users, so an upper
   bound). A gate that reads the length can gain at most about that over the
   best single ``a``.

    python benchmarks/gate_diagnosis.py --data_dir=../shared/data \
        --run_dirs=runs/beauty_hybrid,runs/ml-1m_hybrid \
        --output=benchmarks/results/gate_diagnosis.md

A run trained from ``--data_file`` or ``--prepared_dir`` is read from that file or
those shards (every test user in memory).

With ``fusion=blend_norm`` the decomposition of item 2 is of the blend before
its LayerNorm (the norm is one affine map of it per user).

With ``fusion=layer`` there are no two branch queries: item 1 is the model's
own NDCG@10, items 2 and 3 are per layer (alpha, the two mixers' shares of
that layer's blend, alpha by length in each layer) and the sweep of item 5
runs the trained layers with one fixed ``a`` in every layer (``a = 0``: the
filter mixers alone, ``a = 1``: the LinRec mixers alone).
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

flags.DEFINE_list("run_dirs", None, "Output folders of hybrid runs (hybrid-tfrs-train).")
flags.DEFINE_string("data_dir", None, "Folder of the dataset files (as for training).")
flags.DEFINE_integer("batch_size", 256, "Test users per batch.")
flags.DEFINE_string("output", None, "Markdown file to write (a .json with the numbers beside it).")
flags.DEFINE_list(
    "sweep_alphas",
    [f"{a / 10:g}" for a in range(11)],
    "Fixed blend weights a of the LinRec branch to sweep (item 5).",
)
flags.mark_flag_as_required("run_dirs")
FLAGS = flags.FLAGS

LENGTH_EDGES = (5, 10, 20, 50, 100, 200, 400, 800)
PROTOCOLS = ("full", "full-unseen")


def branch_outputs(model, histories, batch_size, fixed_alpha=None):
    """Per user, at the last item: {"linrec", "fmlp": [U, d] (``fusion="layer"``: each
    layer's mixer output, [U, num_layers, d]), "hidden": [U, d], "alpha": [U, k],
    "features": [U, F] or None}; ``fixed_alpha`` blends with one a in place of the gate."""
    import numpy as np
    from keras import ops

    from hybrid_tfrs.layers.gate import SequenceStatsGate

    encoder = model.encoder
    gate = encoder.gate
    parts = {"linrec": [], "fmlp": [], "hidden": [], "alpha": [], "features": []}
    with_features = (
        fixed_alpha is None and isinstance(gate, SequenceStatsGate) and gate.use_statistics
    )
    for start in range(0, len(histories), batch_size):
        ids = histories[start : start + batch_size]
        last = np.count_nonzero(ids, axis=1) - 1
        rows = np.arange(len(ids))
        branches = encoder(ids, training=False, return_branches=True, fixed_alpha=fixed_alpha)
        for name in ("linrec", "fmlp", "hidden", "alpha"):
            parts[name].append(ops.convert_to_numpy(branches[name])[rows, last])
        if with_features:
            vectors = ops.take(encoder.item_embeddings, ids, axis=0)
            parts["features"].append(ops.convert_to_numpy(gate.features(ids, vectors))[rows, last])
    out = {name: np.concatenate(values) for name, values in parts.items() if values}
    out.setdefault("features", None)
    return out


def stored_query_fn(histories, queries, seen_bias=None):
    """A ``score_fn`` that returns precomputed queries, batch by batch, in order, with
    the model's learned seen-item offset (``--seen_item_bias``) if it has one."""
    import numpy as np

    offset = [0]

    def score(batch):
        start = offset[0]
        stop = start + len(batch)
        if not np.array_equal(batch, histories[start:stop]):
            raise AssertionError("target_ranks visited the users out of order")
        offset[0] = stop
        output = {"query": queries[start:stop]}
        if seen_bias is not None:
            output["seen_bias"] = seen_bias
        return output

    return score


def length_buckets(lengths, edges=LENGTH_EDGES):
    """[(label, bool [U])]: the non-empty buckets of true history length ``lengths`` [U]."""
    import numpy as np

    bounds = (0,) + tuple(edges) + (np.inf,)
    buckets = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        members = (lengths > low) & (lengths <= high)
        if members.any():
            label = f"{low + 1}-{int(high)}" if np.isfinite(high) else f"{low + 1}+"
            buckets.append((label, members))
    return buckets


def alpha_sweep(ndcg_by_alpha, buckets, model_ndcg):
    """What fixed blend weights give, overall and per length bucket.

    Args:
        ndcg_by_alpha: {a: float [U]}: every user's NDCG@10 with the blend
            ``a * h_lin + (1 - a) * h_fmlp``.
        buckets: [(label, bool [U])], e.g. from :func:`length_buckets`.
        model_ndcg: float [U], the model's own (its gate's) NDCG@10.

    Returns:
        {"by_alpha": {a: mean}, "best_alpha", "best_ndcg", "model_ndcg",
        "per_bucket_best_ndcg" (each bucket at its own best a, weighted by
        users), "buckets": [{"bucket", "users", "best_alpha", "best_ndcg",
        "ndcg_at_best_alpha", "model_ndcg"}]}. Ties go to the smaller a.
    """
    import numpy as np

    alphas = sorted(ndcg_by_alpha)
    means = {a: float(np.mean(ndcg_by_alpha[a])) for a in alphas}
    best = max(alphas, key=lambda a: (means[a], -a))
    rows, total = [], 0.0
    for label, members in buckets:
        in_bucket = {a: float(np.mean(ndcg_by_alpha[a][members])) for a in alphas}
        bucket_best = max(alphas, key=lambda a: (in_bucket[a], -a))
        total += in_bucket[bucket_best] * members.sum()
        rows.append(
            {
                "bucket": label,
                "users": int(members.sum()),
                "best_alpha": bucket_best,
                "best_ndcg": in_bucket[bucket_best],
                "ndcg_at_best_alpha": in_bucket[best],
                "model_ndcg": float(np.mean(model_ndcg[members])),
            }
        )
    return {
        "by_alpha": means,
        "best_alpha": best,
        "best_ndcg": means[best],
        "model_ndcg": float(np.mean(model_ndcg)),
        "per_bucket_best_ndcg": total / sum(row["users"] for row in rows),
        "buckets": rows,
    }


def _load_run(run_dir, data_dir):
    """The run's config, split, best model and test users (padded, targets, true lengths)."""
    import numpy as np

    from hybrid_tfrs import run_dir as runs
    from hybrid_tfrs.data.pipeline import pad_latest
    from hybrid_tfrs.run_data import load_split
    from hybrid_tfrs.training import load_run_model

    config = runs.read_config(run_dir)
    if config.model != "hybrid":
        raise SystemExit(f"{run_dir}: a {config.model} run; the diagnosis needs a hybrid")
    if data_dir:
        config.data_dir = data_dir
    _, split = load_split(config, in_memory=True)
    model = load_run_model(os.path.join(run_dir, runs.BEST_MODEL_FILE))
    state_path = os.path.join(run_dir, runs.STATE_FILE)
    state = runs.read_json(state_path) if os.path.isfile(state_path) else {}
    seen = split.test_histories
    users = {
        "seen": seen,
        "histories": pad_latest(seen, config.max_len),
        "targets": np.asarray(split.test_targets),
        "lengths": np.array([len(h) for h in seen]),
    }
    return config, split, model, state.get("best_epoch"), users


def _ranker(model, split, users, batch_size):
    """rank(queries [U, d], protocols) -> {protocol: the target's rank [U]}."""
    from hybrid_tfrs.evaluation import target_ranks
    from hybrid_tfrs.training import item_embeddings

    table = item_embeddings(model)

    def rank(queries, protocols=PROTOCOLS):
        ranks, _ = target_ranks(
            stored_query_fn(users["histories"], queries, model.seen_item_bias),
            users["histories"],
            users["targets"],
            split.user_items,
            split.num_items,
            protocols=protocols,
            batch_size=batch_size,
            seen_items=users["seen"],
            item_embeddings=table,
        )
        return ranks

    return rank, table


def feature_rows(features, names, mean_alpha):
    """Each gate input feature [U] of ``features`` [U, F]: its spread and how alpha [U]
    follows it."""
    import numpy as np

    rows = []
    for i, name in enumerate(names):
        values = features[:, i]
        low_q, high_q = np.quantile(values, [0.25, 0.75])
        varies = values.std() > 1e-9 and mean_alpha.std() > 1e-12
        rows.append(
            {
                "feature": name,
                "mean": float(values.mean()),
                "std": float(values.std()),
                "min": float(values.min()),
                "max": float(values.max()),
                "share_zero": float(np.mean(values == 0)),
                "corr_with_alpha": float(np.corrcoef(values, mean_alpha)[0, 1]) if varies else None,
                "alpha_low_quartile": float(mean_alpha[values <= low_q].mean()),
                "alpha_high_quartile": float(mean_alpha[values >= high_q].mean()),
            }
        )
    return rows


def mixer_shares(alpha, linrec, fmlp):
    """One blend's shares: alpha [U, k], the two outputs [U, d] it weighs.

    Returns {"alpha_mean", "alpha_std_over_users", "alpha_unit_spread",
    "norm_linrec_raw", "norm_fmlp_raw", "linrec_share_of_norm",
    "blend_norm_over_branch_norm", "branch_cosine"}.
    """
    import numpy as np

    lin, fil = alpha * linrec, (1.0 - alpha) * fmlp
    lin_norm, fil_norm = np.linalg.norm(lin, axis=1), np.linalg.norm(fil, axis=1)
    raw_lin, raw_fil = np.linalg.norm(linrec, axis=1), np.linalg.norm(fmlp, axis=1)
    mean_alpha = alpha.mean(axis=1)
    return {
        "alpha_mean": float(mean_alpha.mean()),
        "alpha_std_over_users": float(mean_alpha.std()),
        "alpha_unit_spread": float(alpha.std(axis=1).mean()),
        "norm_linrec_raw": float(raw_lin.mean()),
        "norm_fmlp_raw": float(raw_fil.mean()),
        "linrec_share_of_norm": float(np.mean(lin_norm / np.maximum(lin_norm + fil_norm, 1e-12))),
        "blend_norm_over_branch_norm": float(
            np.mean(np.linalg.norm(lin + fil, axis=1) / np.maximum((raw_lin + raw_fil) / 2, 1e-12))
        ),
        "branch_cosine": float(
            np.mean(np.sum(linrec * fmlp, axis=1) / np.maximum(raw_lin * raw_fil, 1e-12))
        ),
    }


def diagnose(run_dir, data_dir, batch_size, sweep_alphas):
    """The diagnosis of one hybrid run, as a dict (see the module docstring)."""
    import numpy as np
    from keras import ops

    from hybrid_tfrs.evaluation import metric_values, metrics_from_ranks

    config, split, model, best_epoch, users = _load_run(run_dir, data_dir)
    layer_fusion = config.fusion == "layer"
    rank, table = _ranker(model, split, users, batch_size)
    started = time.time()
    out = branch_outputs(model, users["histories"], batch_size)
    alpha = out["alpha"]
    mean_alpha = alpha.mean(axis=1)
    queries = {"model": out["hidden"]}
    if not layer_fusion:
        queries.update(linrec=out["linrec"], fmlp=out["fmlp"])
    ranks = {name: rank(q) for name, q in queries.items()}
    result = {
        "run_dir": run_dir,
        "best_epoch": best_epoch,
        "dataset": config.dataset,
        "gate_mode": config.gate_mode,
        "gate_features": getattr(config, "gate_features", "basic"),
        "gate_output": getattr(config, "gate_output", "scalar"),
        "fusion": getattr(config, "fusion", "blend"),
        "users": int(len(users["targets"])),
        "ndcg10": {
            name: {p: metrics_from_ranks(r[p])["NDCG@10"] for p in PROTOCOLS}
            for name, r in ranks.items()
        },
        "buckets": [],
        "features": [],
    }
    if layer_fusion:
        width = alpha.shape[1] // model.encoder.num_layers
        layer_alpha = [
            alpha[:, i * width : (i + 1) * width] for i in range(alpha.shape[1] // width)
        ]
        result["layers"] = [
            mixer_shares(a, out["linrec"][:, i], out["fmlp"][:, i])
            for i, a in enumerate(layer_alpha)
        ]
    else:
        target_vectors = table[users["targets"]]
        lin_score = np.sum(alpha * out["linrec"] * target_vectors, axis=1)
        fmlp_score = np.sum((1.0 - alpha) * out["fmlp"] * target_vectors, axis=1)
        result["shares"] = dict(
            mixer_shares(alpha, out["linrec"], out["fmlp"]),
            target_score_linrec=float(lin_score.mean()),
            target_score_fmlp=float(fmlp_score.mean()),
            users_linrec_larger_score_part=float(np.mean(np.abs(lin_score) > np.abs(fmlp_score))),
        )
    buckets = length_buckets(users["lengths"])
    for label, members in buckets:
        row = {
            "bucket": label,
            "users": int(members.sum()),
            "alpha_mean": float(mean_alpha[members].mean()),
            "alpha_std": float(mean_alpha[members].std()),
            **{
                f"ndcg10_{name}": metrics_from_ranks(r["full-unseen"][members])["NDCG@10"]
                for name, r in ranks.items()
            },
        }
        if layer_fusion:
            row["alpha_by_layer"] = [float(a[members].mean()) for a in layer_alpha]
        result["buckets"].append(row)
    sweep_ndcg = {}
    for a in sweep_alphas:
        if layer_fusion:  # the trained layers, every one blending with a
            blend = branch_outputs(model, users["histories"], batch_size, fixed_alpha=a)["hidden"]
        else:
            blend = a * out["linrec"] + (1.0 - a) * out["fmlp"]
            if model.encoder.fusion_norm is not None:
                blend = ops.convert_to_numpy(model.encoder.fusion_norm(blend))
        swept = rank(blend, protocols=("full-unseen",))
        sweep_ndcg[a] = metric_values(swept["full-unseen"])["NDCG@10"]
    model_ndcg = metric_values(ranks["model"]["full-unseen"])["NDCG@10"]
    result["sweep"] = alpha_sweep(sweep_ndcg, buckets, model_ndcg)
    result["seconds"] = round(time.time() - started, 1)
    if out["features"] is not None:
        names = model.encoder.gate.feature_names
        result["features"] = feature_rows(out["features"], names, mean_alpha)
    return result


def _fmt(value, digits=4):
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _end_blend_lines(result):
    shares = result["shares"]
    return [
        "| share | value |",
        "|---|---|",
        f"| mean alpha (LinRec's weight) | {_fmt(shares['alpha_mean'])} |",
        f"| std of alpha over users | {_fmt(shares['alpha_std_over_users'])} |",
        f"| std of alpha over hidden units (vector gate) | {_fmt(shares['alpha_unit_spread'])} |",
        f"| mean norm, LinRec / FMLP output | {shares['norm_linrec_raw']:.2f} / "
        f"{shares['norm_fmlp_raw']:.2f} |",
        f"| LinRec's share of the blended query's norm | {_fmt(shares['linrec_share_of_norm'])} |",
        f"| mean cosine between the branch outputs | {_fmt(shares['branch_cosine'])} |",
        f"| norm of the blend / mean branch norm | {_fmt(shares['blend_norm_over_branch_norm'])} |",
        f"| target score from LinRec / FMLP part | {shares['target_score_linrec']:.3f} / "
        f"{shares['target_score_fmlp']:.3f} |",
        f"| users whose LinRec part of the target score is larger | "
        f"{_fmt(shares['users_linrec_larger_score_part'])} |",
        "",
        "| history length | users | mean alpha | std alpha | "
        "full-unseen NDCG@10 LinRec / FMLP / blend |",
        "|---|---|---|---|---|",
    ] + [
        f"| {b['bucket']} | {b['users']} | {_fmt(b['alpha_mean'])} | {_fmt(b['alpha_std'])} | "
        f"{b['ndcg10_linrec']:.4f} / {b['ndcg10_fmlp']:.4f} / {b['ndcg10_model']:.4f} |"
        for b in result["buckets"]
    ]


def _layer_lines(result):
    layers = result["layers"]
    lines = [
        "Each layer blends its LinRec mixer's and its filter mixer's outputs (each with its "
        "residual and LayerNorm) before its FFN:",
        "",
        "| layer | mean alpha | std over users | norm LinRec / filter mixer | LinRec's share "
        "of the blend's norm | cosine between the mixers | norm of the blend / mean mixer norm |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, shares in enumerate(layers, start=1):
        lines.append(
            f"| {i} | {_fmt(shares['alpha_mean'])} | {_fmt(shares['alpha_std_over_users'])} | "
            f"{shares['norm_linrec_raw']:.2f} / {shares['norm_fmlp_raw']:.2f} | "
            f"{_fmt(shares['linrec_share_of_norm'])} | {_fmt(shares['branch_cosine'])} | "
            f"{_fmt(shares['blend_norm_over_branch_norm'])} |"
        )
    by_layer = " | ".join(f"alpha, layer {i}" for i in range(1, len(layers) + 1))
    lines += [
        "",
        f"| history length | users | {by_layer} | full-unseen NDCG@10 |",
        "|---|---|" + "---|" * len(layers) + "---|",
    ]
    for b in result["buckets"]:
        alphas = " | ".join(_fmt(a) for a in b["alpha_by_layer"])
        lines.append(f"| {b['bucket']} | {b['users']} | {alphas} | {b['ndcg10_model']:.4f} |")
    return lines


def _sweep_lines(sweep, layer_fusion):
    where = "in every layer" if layer_fusion else "at the end"
    return [
        "",
        f"One fixed blend weight a for every user, {where} (full-unseen NDCG@10), "
        "against the gate:",
        "",
        "| a | " + " | ".join(f"{a:g}" for a in sweep["by_alpha"]) + " |",
        "|---|" + "---|" * len(sweep["by_alpha"]),
        "| NDCG@10 | " + " | ".join(f"{v:.4f}" for v in sweep["by_alpha"].values()) + " |",
        "",
        f"The gate: {sweep['model_ndcg']:.4f}. Best single a = {sweep['best_alpha']:g}: "
        f"{sweep['best_ndcg']:.4f}. Each length bucket at its own best a (chosen on these "
        f"users, an upper bound for a gate that reads the length): "
        f"{sweep['per_bucket_best_ndcg']:.4f}.",
        "",
        "| history length | users | best a | NDCG@10 at it | at the overall best a | the gate |",
        "|---|---|---|---|---|---|",
    ] + [
        f"| {b['bucket']} | {b['users']} | {b['best_alpha']:g} | {b['best_ndcg']:.4f} | "
        f"{b['ndcg_at_best_alpha']:.4f} | {b['model_ndcg']:.4f} |"
        for b in sweep["buckets"]
    ]


def _feature_lines(features):
    if not features:
        return []
    return [
        "",
        "| gate feature | mean | std | min | max | share = 0 | corr. with alpha | "
        "alpha, lowest / highest quartile |",
        "|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {f['feature']} | {_fmt(f['mean'])} | {_fmt(f['std'])} | {_fmt(f['min'])} | "
        f"{_fmt(f['max'])} | {_fmt(f['share_zero'], 3)} | "
        f"{_fmt(f['corr_with_alpha'], 3)} | {_fmt(f['alpha_low_quartile'])} / "
        f"{_fmt(f['alpha_high_quartile'])} |"
        for f in features
    ]


def markdown(result):
    """One run's diagnosis as a markdown section."""
    layer_fusion = "layers" in result
    lines = [
        f"## {result['dataset']}: {result['run_dir']}",
        "",
        f"gate_mode={result['gate_mode']}, gate_features={result['gate_features']}, "
        f"gate_output={result['gate_output']}, fusion={result['fusion']}; "
        f"{result['users']} test users; the model of epoch {result['best_epoch']} "
        f"(best validation); {result['seconds']} s.",
        "",
        "| query | full NDCG@10 | full-unseen NDCG@10 |",
        "|---|---|---|",
    ]
    names = {
        "linrec": "LinRec branch alone",
        "fmlp": "FMLP branch alone",
        "model": "blend (the model)",
    }
    for key, label in names.items():
        if key in result["ndcg10"]:
            ndcg = result["ndcg10"][key]
            lines.append(f"| {label} | {ndcg['full']:.4f} | {ndcg['full-unseen']:.4f} |")
    lines.append("")
    lines += _layer_lines(result) if layer_fusion else _end_blend_lines(result)
    lines += _sweep_lines(result["sweep"], layer_fusion)
    lines += _feature_lines(result["features"])
    return "\n".join(lines) + "\n"


def main(_):
    from hybrid_tfrs.cli.common import quiet_tensorflow

    quiet_tensorflow()
    alphas = sorted({float(a) for a in FLAGS.sweep_alphas})
    if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
        raise app.UsageError(f"--sweep_alphas: values in [0, 1], got {FLAGS.sweep_alphas}")
    results = [diagnose(run, FLAGS.data_dir, FLAGS.batch_size, alphas) for run in FLAGS.run_dirs]
    page = "".join(markdown(r) + "\n" for r in results)
    print(page)
    if FLAGS.output:
        command = "python benchmarks/gate_diagnosis.py " + " ".join(
            f"--{name}={value}"
            for name, value in (
                ("data_dir", FLAGS.data_dir),
                ("run_dirs", ",".join(FLAGS.run_dirs)),
                ("sweep_alphas", ",".join(FLAGS.sweep_alphas)),
                ("output", FLAGS.output),
            )
            if value
        )
        header = f"# Gate diagnosis\n\nCommand: `{command}`\n\n"
        with open(FLAGS.output, "w") as handle:
            handle.write(header + page)
        with open(os.path.splitext(FLAGS.output)[0] + ".json", "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    app.run(main)
