"""Leave-one-out evaluation: ranks, metrics, negative samplers, protocols."""

import math

import numpy as np
import pytest

from hybrid_tfrs.evaluation import (
    METRICS,
    PROTOCOLS,
    evaluate,
    format_table,
    metrics_from_ranks,
    rank_of_target,
    target_ranks,
)
from hybrid_tfrs.negatives import popularity_negatives, uniform_negatives

NUM_ITEMS = 150


# ---------------------------------------------------------------- ranks


def test_rank_plain_order():
    scores = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
    np.testing.assert_array_equal(rank_of_target(scores, [2, 0]), [2, 1])


def test_rank_all_equal_scores_give_worst_rank():
    scores = np.zeros((1, 7))
    assert rank_of_target(scores, [3])[0] == 7


def test_rank_two_way_tie_is_pessimistic():
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    # one higher, one other equal -> 1 + 1 + 1
    assert rank_of_target(scores, [1])[0] == 3
    assert rank_of_target(scores, [2])[0] == 3


def test_rank_ignores_invalid_columns_but_never_the_target():
    scores = np.array([[5.0, 4.0, 1.0, 1.0]])
    valid = np.array([[False, True, False, True]])
    assert rank_of_target(scores, [2], valid)[0] == 3  # col 1 higher, col 3 tie
    assert rank_of_target(scores, [3], valid)[0] == 2  # col 2 invalid, col 0 invalid


def test_rank_shape_errors():
    with pytest.raises(ValueError, match="target_col"):
        rank_of_target(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError, match="valid must have the shape"):
        rank_of_target(np.zeros((2, 3)), [0, 1], np.ones((2, 2), dtype=bool))


def test_rank_nan_raises():
    with pytest.raises(ValueError, match="NaN.*row 1"):
        rank_of_target(np.array([[1.0, 2.0], [np.nan, 0.0]]), [0, 1])


# -------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    metrics = metrics_from_ranks([1, 2, 4, 11, 30])
    assert tuple(metrics) == METRICS
    g2, g4, g11 = 1 / math.log2(3), 1 / math.log2(5), 1 / math.log2(12)
    expected = {
        "HR@1": 0.2,
        "HR@5": 0.6,
        "HR@10": 0.6,
        "HR@20": 0.8,
        "NDCG@5": (1 + g2 + g4) / 5,
        "NDCG@10": (1 + g2 + g4) / 5,
        "NDCG@20": (1 + g2 + g4 + g11) / 5,
        "MRR": (1 + 1 / 2 + 1 / 4 + 1 / 11 + 1 / 30) / 5,
        "MRR@10": (1 + 1 / 2 + 1 / 4) / 5,
    }
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name


def test_metrics_reject_bad_ranks():
    with pytest.raises(ValueError, match=">= 1"):
        metrics_from_ranks([0, 3])
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks([])


def test_metrics_agree_with_keras_rs_on_tie_free_scores():
    keras_rs = pytest.importorskip("keras_rs")
    rng = np.random.default_rng(3)
    scores = rng.permutation(np.arange(64 * 30, dtype=np.float32)).reshape(64, 30)
    target = rng.integers(0, 30, size=64)
    labels = np.zeros_like(scores)
    labels[np.arange(64), target] = 1.0
    ours = metrics_from_ranks(rank_of_target(scores, target))
    for metric, name in [
        (keras_rs.metrics.NDCG(k=10), "NDCG@10"),
        (keras_rs.metrics.MeanReciprocalRank(), "MRR"),
        (keras_rs.metrics.MeanReciprocalRank(k=10), "MRR@10"),
    ]:
        metric.update_state(labels, scores)
        assert float(metric.result()) == pytest.approx(ours[name], abs=1e-5), name


# ------------------------------------------------------------- samplers


def random_user_items(num_users, num_items, seed, max_len=40):
    rng = np.random.default_rng(seed)
    return [
        rng.choice(np.arange(1, num_items + 1), size=rng.integers(1, max_len), replace=False)
        for _ in range(num_users)
    ]


def popularity_counts(num_items, seed):
    rng = np.random.default_rng(seed)
    counts = np.floor(rng.pareto(1.0, size=num_items + 1) * 5)
    counts[0] = 0
    return counts


@pytest.mark.parametrize("sampler", ["uniform", "pop"])
def test_sampler_properties(sampler):
    user_items = random_user_items(60, NUM_ITEMS, seed=0)
    counts = popularity_counts(NUM_ITEMS, seed=1)

    def draw(items, seed):
        if sampler == "uniform":
            return uniform_negatives(items, NUM_ITEMS, n=50, seed=seed)
        return popularity_negatives(items, counts, n=50, seed=seed)

    negatives = draw(user_items, seed=5)
    assert negatives.shape == (60, 50) and negatives.dtype == np.int32
    assert negatives.min() >= 1 and negatives.max() <= NUM_ITEMS
    for row, items in zip(negatives, user_items):
        assert len(set(row.tolist())) == 50
        assert not set(row.tolist()) & set(items.tolist())
    np.testing.assert_array_equal(draw(user_items, seed=5), negatives)
    assert not np.array_equal(draw(user_items, seed=6), negatives)
    # a user's negatives do not depend on the users after it (chunking, batch size)
    np.testing.assert_array_equal(draw(user_items[:7], seed=5), negatives[:7])


def test_popularity_sampler_follows_popularity():
    counts = np.zeros(NUM_ITEMS + 1)
    counts[1:11] = 100.0  # ten items hold weight 1000
    counts[11:] = 1.0  # the other 140 hold weight 140
    negatives = popularity_negatives([[]] * 3000, counts, n=1, seed=0)
    share = np.mean(negatives[:, 0] <= 10)
    expected = 1000 / 1140
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / 3000)
    uniform = uniform_negatives([[]] * 3000, NUM_ITEMS, n=1, seed=0)
    assert abs(np.mean(uniform[:, 0] <= 10) - 10 / NUM_ITEMS) < 0.02


def test_popularity_floor_keeps_cold_items_drawable():
    counts = np.zeros(NUM_ITEMS + 1)
    counts[1:101] = 50.0  # items 101..150 never seen in training
    user_saw_all_warm = [np.arange(1, 101)]
    negatives = popularity_negatives(user_saw_all_warm, counts, n=40, seed=0)
    assert negatives.min() > 100
    # a cold item is drawn only after the warm ones run out
    first = popularity_negatives([[]] * 100, counts, n=1, seed=0)
    assert first.max() <= 100


def test_popularity_floor_is_a_thousandth_of_the_rarest_count():
    counts = np.array([0.0, 1.0, 0.0])  # item 2 has weight 1e-3
    cold = np.sum(popularity_negatives([[]] * 20000, counts, n=1, seed=0) == 2)
    assert 5 <= cold <= 40  # expected 20000 * 1e-3 / 1.001 ~ 20


def test_sampler_too_few_unseen_items_names_user():
    user_items = [[1, 2], np.arange(1, NUM_ITEMS - 5)]
    with pytest.raises(ValueError, match=r"user 1 has 6 unseen items \(144 of 150"):
        uniform_negatives(user_items, NUM_ITEMS, n=99, seed=0)
    with pytest.raises(ValueError, match="user 1"):
        popularity_negatives(user_items, np.ones(NUM_ITEMS + 1), n=100, seed=0)


def test_sampler_rejects_out_of_range_items():
    with pytest.raises(ValueError, match="user_items"):
        uniform_negatives([[1, NUM_ITEMS + 1]], NUM_ITEMS, n=5, seed=0)


# ------------------------------------------------------------- evaluate


def make_data(num_users, seed, max_len=12, width=16):
    """Histories [U, width]; target = f(history) so an oracle can see it."""
    rng = np.random.default_rng(seed)
    histories = np.zeros((num_users, width), dtype=np.int32)
    lengths = rng.integers(1, max_len + 1, size=num_users)
    for u, length in enumerate(lengths):
        histories[u, :length] = rng.choice(np.arange(1, NUM_ITEMS + 1), size=length, replace=False)
    targets = oracle_target(histories)
    user_items = [np.append(h[h > 0], t) for h, t in zip(histories, targets)]
    counts = np.bincount(histories.ravel(), minlength=NUM_ITEMS + 1).astype(float)
    counts[0] = 0
    return histories, targets, user_items, counts


def oracle_target(histories):
    return (histories.astype(np.int64).sum(axis=1) * 7919) % NUM_ITEMS + 1


def run(score_fn, data, **kwargs):
    histories, targets, user_items, counts = data
    kwargs.setdefault("progress", False)
    return evaluate(score_fn, histories, targets, user_items, NUM_ITEMS, counts, **kwargs)


def oracle_scores(histories):
    scores = np.zeros((histories.shape[0], NUM_ITEMS + 1), dtype=np.float32)
    scores[np.arange(histories.shape[0]), oracle_target(histories)] = 1.0
    return {"scores": scores}


def test_oracle_gets_hr1_everywhere():
    result = run(oracle_scores, make_data(80, seed=0), batch_size=32)
    assert set(result["protocols"]) == set(PROTOCOLS)
    for protocol, metrics in result["protocols"].items():
        assert tuple(metrics) == METRICS
        assert metrics["HR@1"] == 1.0 and metrics["MRR"] == 1.0, protocol
    assert result["users"] == 80 and result["alpha"] is None


def test_negatives_never_repeat_the_target_even_if_user_items_omit_it():
    histories, targets, user_items, counts = make_data(40, seed=9)
    history_only = [h[h > 0] for h in histories]
    result = run(oracle_scores, (histories, targets, history_only, counts))
    for metrics in result["protocols"].values():
        assert metrics["HR@1"] == 1.0


def test_constant_model_gets_worst_rank():
    def constant(histories):
        return {"scores": np.ones((histories.shape[0], NUM_ITEMS + 1))}

    result = run(constant, make_data(20, seed=1))
    assert result["protocols"]["full"]["MRR"] == pytest.approx(1 / NUM_ITEMS)
    assert result["protocols"]["uniform-99"]["MRR"] == pytest.approx(1 / 100)
    assert result["protocols"]["pop-100"]["MRR"] == pytest.approx(1 / 101)


def test_random_model_matches_chance():
    def random_scores(histories):
        rng = np.random.default_rng(int(histories.sum()))
        return {"scores": rng.random((histories.shape[0], NUM_ITEMS + 1))}

    result = run(random_scores, make_data(2000, seed=2), protocols=("uniform-99", "pop-100"))
    for protocol, candidates in [("uniform-99", 100), ("pop-100", 101)]:
        metrics = result["protocols"][protocol]
        p = 10 / candidates
        assert abs(metrics["HR@10"] - p) < 4 * math.sqrt(p * (1 - p) / 2000), protocol
        expected_mrr = sum(1 / r for r in range(1, candidates + 1)) / candidates
        assert metrics["MRR"] == pytest.approx(expected_mrr, abs=0.01), protocol


def test_full_never_ranks_padding_item():
    data = make_data(30, seed=3)

    def padding_first(histories):
        scores = oracle_scores(histories)["scores"]
        scores[:, 0] = np.inf
        return {"scores": scores}

    assert run(padding_first, data, protocols=("full",))["protocols"]["full"]["HR@1"] == 1.0


def test_full_unseen_masks_history_items_but_not_the_target():
    histories = np.array([[3, 4, 5, 0], [7, 8, 9, 6]], dtype=np.int32)
    targets = np.array([6, 6])  # user 1 repeats item 6 from its history

    def history_first(batch):
        scores = np.zeros((batch.shape[0], NUM_ITEMS + 1))
        scores[:, 6] = 1.0
        rows, cols = np.nonzero(batch)
        scores[rows, batch[rows, cols]] = 2.0  # history items outscore the target...
        scores[:, 6] = np.where((batch == 6).any(axis=1), 1.0, scores[:, 6])
        return {"scores": scores}

    result = evaluate(
        history_first,
        histories,
        targets,
        [h[h > 0] for h in histories],
        NUM_ITEMS,
        protocols=("full", "full-unseen"),
        progress=False,
    )["protocols"]
    # both users: 3 history items above the target (rank 4) unless excluded
    assert result["full"]["MRR"] == pytest.approx(1 / 4)
    assert result["full-unseen"]["MRR"] == pytest.approx(1.0)


def test_full_unseen_masks_the_untruncated_history_when_given():
    """Items older than the L-item window still count as seen (S3-Rec's train matrix)."""
    window = np.array([[4, 5]], dtype=np.int32)  # the model reads the latest 2 items
    older = [np.array([2, 3, 4, 5])]  # items 2 and 3 fell out of the window

    def old_items_first(batch):
        scores = np.zeros((batch.shape[0], NUM_ITEMS + 1))
        scores[:, [2, 3]] = 3.0
        scores[:, [4, 5]] = 2.0
        scores[:, 9] = 1.0
        return {"scores": scores}

    def unseen_mrr(seen_items):
        return evaluate(
            old_items_first,
            window,
            np.array([9]),
            older,
            NUM_ITEMS,
            protocols=("full-unseen",),
            seen_items=seen_items,
            progress=False,
        )["protocols"]["full-unseen"]["MRR"]

    assert unseen_mrr(None) == pytest.approx(1 / 3)  # only the window masked
    assert unseen_mrr(older) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="seen_items has 2 users, histories has 1"):
        unseen_mrr(older * 2)


def test_results_do_not_depend_on_batch_size():
    data = make_data(50, seed=4)

    def hashed(histories):
        return {"scores": np.sin(histories.sum(axis=1, keepdims=True) * np.arange(NUM_ITEMS + 1))}

    assert run(hashed, data, batch_size=7) == run(hashed, data, batch_size=64)
    assert run(hashed, data, seed=1) != run(hashed, data, seed=2)


def test_buckets_and_alpha():
    histories, targets, user_items, counts = make_data(60, seed=5, max_len=14)
    lengths = np.count_nonzero(histories, axis=1)

    def with_alpha(batch):
        out = oracle_scores(batch)
        out["alpha"] = np.count_nonzero(batch, axis=1) / 100.0
        return out

    result = run(with_alpha, (histories, targets, user_items, counts), batch_size=16)
    buckets = {b["bucket"]: b for b in result["buckets"]}
    assert list(buckets) == ["1-5", "6-10", "11-20"]
    for label, members in [
        ("1-5", lengths <= 5),
        ("6-10", (lengths > 5) & (lengths <= 10)),
        ("11-20", lengths > 10),
    ]:
        assert buckets[label]["users"] == members.sum()
        assert buckets[label]["alpha"] == pytest.approx(lengths[members].mean() / 100)
        assert set(buckets[label]["metrics"]) == set(PROTOCOLS)
    assert result["alpha"] == pytest.approx(lengths.mean() / 100)

    true_lengths = np.full(60, 300)
    result = run(
        with_alpha,
        (histories, targets, user_items, counts),
        history_lengths=true_lengths,
        protocols=("full",),
    )
    assert [(b["bucket"], b["users"]) for b in result["buckets"]] == [("201+", 60)]


def test_progress_bar_runs(capsys):
    run(oracle_scores, make_data(10, seed=6), protocols=("full",), progress=True)
    assert "10/10" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"protocols": ("full", "pop-50")}, r"pop-50.*'full', 'full-unseen', 'uniform-99'"),
        ({"targets": np.ones(9, dtype=int)}, r"targets must have shape \(10,\)"),
        ({"user_items": [[1]] * 9}, "user_items has 9 users"),
        ({"history_lengths": np.ones(3)}, "history_lengths must have shape"),
        ({"item_popularity": np.ones(NUM_ITEMS)}, r"item_popularity must have shape \(151,\)"),
        ({"item_popularity": None}, "item_popularity is required for the pop-100"),
        ({"histories": np.ones(10, dtype=np.int32)}, r"histories must be \[U, L\]"),
        ({"length_buckets": (10, 5)}, "length_buckets must be increasing"),
        (
            {"histories": np.full((10, 3), NUM_ITEMS + 1, dtype=np.int32)},
            r"histories must hold item indices in 0\.\.150",
        ),
        ({"targets": np.zeros(10, dtype=int)}, r"targets must lie in 1\.\.150"),
    ],
)
def test_evaluate_argument_errors(kwargs, message):
    histories, targets, user_items, counts = make_data(10, seed=7)
    args = dict(
        score_fn=oracle_scores,
        histories=histories,
        targets=targets,
        user_items=user_items,
        num_items=NUM_ITEMS,
        item_popularity=counts,
        progress=False,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate(**args)


@pytest.mark.parametrize(
    "output, message",
    [
        ({"scores": np.zeros((4, NUM_ITEMS))}, r"'scores' must have shape \(4, 151\)"),
        (
            {"scores": np.zeros((4, NUM_ITEMS + 1)), "alpha": np.zeros(3)},
            r"'alpha' must have shape \(4,\)",
        ),
        ({"scores": np.full((4, NUM_ITEMS + 1), np.nan)}, "NaN"),
    ],
)
def test_evaluate_score_fn_errors(output, message):
    with pytest.raises(ValueError, match=message):
        run(lambda batch: output, make_data(4, seed=8), protocols=("full",))


# ------------------------------------------------------- chunked scoring


def small_int_model(seed, dim=4):
    """Item table and query function with small integer entries: the dot
    products are exact in float32 whatever the summation order, and tie often."""
    table = np.random.default_rng(seed).integers(-2, 3, size=(NUM_ITEMS + 1, dim))
    table = table.astype(np.float32)

    def query(histories):
        mix = histories.astype(np.int64).sum(axis=1, keepdims=True) * np.arange(1, 2 * dim, 2)
        return (mix % 5 - 2).astype(np.float32)

    return table, query


def reference_full_ranks(scores, targets, seen_items):
    """Ranks on the whole [U, N + 1] matrix with ``rank_of_target`` (the unchunked rule)."""
    valid = np.ones(scores.shape, dtype=bool)
    for row, items in enumerate(seen_items):
        valid[row, items] = False
    return {
        "full": rank_of_target(scores[:, 1:], targets - 1),
        "full-unseen": rank_of_target(scores[:, 1:], targets - 1, valid[:, 1:]),
    }


@pytest.mark.parametrize("chunk_size", [1, 7, 64, NUM_ITEMS, NUM_ITEMS + 1, 10_000])
def test_chunked_query_ranks_equal_whole_matrix_ranks(chunk_size):
    histories, targets, user_items, counts = make_data(70, seed=11)
    table, query = small_int_model(seed=12)
    scores = query(histories) @ table.T
    target_scores = scores[np.arange(70), targets]
    ties = (scores[:, 1:] == target_scores[:, None]).sum(axis=1) - 1
    assert (ties > 0).mean() > 0.5  # the data exercise the tie rule
    seen_items = [h[h > 0] for h in histories]
    args = (histories, targets, user_items, NUM_ITEMS, counts)

    chunked, _ = target_ranks(
        lambda h: {"query": query(h)},
        *args,
        batch_size=16,
        item_embeddings=table,
        chunk_size=chunk_size,
    )
    whole, _ = target_ranks(lambda h: {"scores": query(h) @ table.T}, *args, batch_size=70)
    expected = reference_full_ranks(scores, targets, seen_items)
    for protocol in ("full", "full-unseen"):
        np.testing.assert_array_equal(chunked[protocol], expected[protocol], err_msg=protocol)
    for protocol in PROTOCOLS:
        np.testing.assert_array_equal(chunked[protocol], whole[protocol], err_msg=protocol)


@pytest.mark.parametrize("chunk_size", [1, 13])
def test_chunked_dense_scores_rank_as_one_chunk(chunk_size):
    data = make_data(40, seed=13)

    def hashed(histories):
        return {
            "scores": np.round(
                np.sin(histories.sum(axis=1, keepdims=True) * np.arange(NUM_ITEMS + 1)), 1
            )
        }

    assert run(hashed, data, chunk_size=chunk_size) == run(hashed, data)


def test_full_unseen_counts_a_repeated_seen_item_once():
    table = np.zeros((NUM_ITEMS + 1, 1), dtype=np.float32)
    table[[5, 7, 9], 0] = [3.0, 2.0, 1.0]  # seen items 5 and 7 above the target 9
    ranks, _ = target_ranks(
        lambda h: {"query": np.ones((len(h), 1), np.float32)},
        np.array([[5, 5, 7, 0]], dtype=np.int32),
        [9],
        [[5, 7, 9]],
        NUM_ITEMS,
        protocols=("full", "full-unseen"),
        item_embeddings=table,
        chunk_size=4,
    )
    assert ranks["full"].tolist() == [3] and ranks["full-unseen"].tolist() == [1]


@pytest.mark.parametrize(
    "output, kwargs, message",
    [
        ({"query": np.zeros((4, 3), np.float32)}, {}, "'query' but item_embeddings is None"),
        (
            {"query": np.zeros((4, 3)), "scores": np.zeros((4, NUM_ITEMS + 1))},
            {"item_embeddings": np.zeros((NUM_ITEMS + 1, 3))},
            "exactly one of 'scores' and 'query'",
        ),
        (
            {"query": np.zeros((4, 2))},
            {"item_embeddings": np.zeros((NUM_ITEMS + 1, 3))},
            r"'query' must have shape \(4, 3\)",
        ),
        (
            {"query": np.zeros((4, 3))},
            {"item_embeddings": np.zeros((NUM_ITEMS, 3))},
            r"item_embeddings must have shape \(151, d\)",
        ),
        ({"scores": np.zeros((4, NUM_ITEMS + 1))}, {"chunk_size": 0}, "chunk_size must be"),
        (
            {"query": np.full((4, 3), np.nan)},
            {"item_embeddings": np.ones((NUM_ITEMS + 1, 3))},
            "NaN in 4 of 4 rows",
        ),
    ],
)
def test_evaluate_query_errors(output, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(lambda batch: output, make_data(4, seed=8), protocols=("full",), **kwargs)


def test_format_table():
    table = format_table(
        {"full": {"HR@10": 0.123456, "MRR": 0.05}, "uniform-99": {"HR@10": 0.5, "MRR": 0.25}}
    )
    lines = table.splitlines()
    assert lines[0].split() == ["protocol", "HR@10", "MRR"]
    assert lines[1].split() == ["full", "0.1235", "0.0500"]
    assert lines[2].split() == ["uniform-99", "0.5000", "0.2500"]
