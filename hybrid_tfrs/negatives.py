"""Seeded negative samplers for sampled leave-one-out evaluation.

Both samplers draw, for every user, ``n`` distinct items among the items the
user never interacted with (``user_items[u]`` holds all of them, targets
included), never the padding index 0.

Determinism: user ``u``'s negatives come from its own random stream, seeded by
``(seed, sampler, u)``. They depend only on the seed, the user's index, its
items and the catalogue, so they do not change with the evaluation batch size,
the internal chunking, or the other users; a batch of users ``first_user``,
``first_user + 1``, ... drawn alone (``first_user=``) gets the negatives those
users get in a draw for all users at once.
"""

import numpy as np

UNIFORM_STREAM = 0
POPULARITY_STREAM = 1
POPULARITY_FLOOR = 1e-3
CHUNK_USERS = 256


def uniform_negatives(user_items, num_items, n=99, seed=0):
    """Draws ``n`` negatives per user uniformly among its unseen items.

    Args:
      user_items: U sequences of item indices in 0..num_items (0 is ignored).
      num_items: N, the largest item index.
      n: negatives per user.
      seed: non-negative int.

    Returns:
      int32 [U, n], in draw order, without replacement.
    """
    flat, offsets = flatten_user_items(user_items, num_items)
    return uniform_from_flat(flat, offsets, num_items, n, seed)


def popularity_negatives(user_items, item_popularity, n=100, seed=0):
    """Draws ``n`` negatives per user proportional to item popularity.

    Sampling is without replacement among the user's unseen items (successive
    sampling: each next negative is drawn proportional to popularity among the
    items not yet drawn). Items with a zero count get the weight
    ``POPULARITY_FLOOR * (smallest positive count)``: 1000x less likely than
    the rarest seen item, yet still drawable, so users whose unseen items are
    mostly cold still get ``n`` negatives. All-zero counts give uniform sampling.

    Args:
      user_items: U sequences of item indices in 0..N (0 is ignored).
      item_popularity: float [N + 1], training counts; index 0 is ignored.
      n: negatives per user.
      seed: non-negative int.

    Returns:
      int32 [U, n], most likely draw first, without replacement.
    """
    item_popularity = np.asarray(item_popularity, dtype=np.float64)
    if item_popularity.ndim != 1 or item_popularity.shape[0] < 2:
        raise ValueError(
            f"item_popularity must have shape [num_items + 1], got {item_popularity.shape}"
        )
    num_items = item_popularity.shape[0] - 1
    flat, offsets = flatten_user_items(user_items, num_items)
    return popularity_from_flat(flat, offsets, item_popularity, n, seed)


def flatten_user_items(user_items, num_items):
    """Concatenates per-user items.

    Returns:
      (flat int64 [total], offsets int64 [U + 1]): user u's items are
      ``flat[offsets[u]:offsets[u + 1]]``.
    """
    rows = [np.asarray(items, dtype=np.int64).reshape(-1) for items in user_items]
    lengths = np.array([row.shape[0] for row in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    check_item_range(flat, num_items, "user_items")
    return flat, offsets


def check_item_range(items, num_items, name):
    """ValueError naming ``name`` unless every entry of ``items`` lies in 0..num_items."""
    if items.size and (items.min() < 0 or items.max() > num_items):
        raise ValueError(
            f"{name} must hold item indices in 0..{num_items}, "
            f"got values in {items.min()}..{items.max()}"
        )


def uniform_from_flat(flat, offsets, num_items, n, seed, first_user=0):
    """``uniform_negatives`` on flattened user items; int32 [U, n].

    ``first_user``: the index of the first user of ``offsets`` (seeds its stream).
    """
    _check_seed(seed)
    num_seen = _check_enough_unseen(flat, offsets, num_items, n, first_user)
    seen_row = np.zeros(num_items + 1, dtype=bool)
    negatives = np.empty((len(offsets) - 1, n), dtype=np.int32)
    for user in range(len(offsets) - 1):
        items = flat[offsets[user] : offsets[user + 1]]
        rng = np.random.default_rng([seed, UNIFORM_STREAM, first_user + user])
        # A uniform ordered sample of n + |seen| distinct items is the prefix
        # of a uniform permutation; dropping seen items keeps it uniform and
        # leaves at least n.
        draw = rng.choice(num_items, size=n + num_seen[user], replace=False) + 1
        seen_row[items] = True
        negatives[user] = draw[~seen_row[draw]][:n]
        seen_row[items] = False
    return negatives


def popularity_from_flat(flat, offsets, item_popularity, n, seed, first_user=0):
    """``popularity_negatives`` on flattened user items; int32 [U, n].

    ``first_user``: the index of the first user of ``offsets`` (seeds its stream).

    Exponential-race form of the Gumbel-top-k trick: the n items with the
    smallest E_i / w_i (E_i ~ Exp(1)) are the n largest log w_i + Gumbel_i,
    i.e. a popularity-proportional sample without replacement.
    """
    _check_seed(seed)
    if not np.all(np.isfinite(item_popularity)) or np.any(item_popularity < 0):
        raise ValueError("item_popularity must be finite and non-negative")
    num_items = item_popularity.shape[0] - 1
    _check_enough_unseen(flat, offsets, num_items, n, first_user)
    inverse_weight = _inverse_weights(item_popularity).astype(np.float32)
    num_users = len(offsets) - 1
    negatives = np.empty((num_users, n), dtype=np.int32)
    keys = np.empty((min(CHUNK_USERS, num_users), num_items + 1), dtype=np.float32)
    for start in range(0, num_users, CHUNK_USERS):
        stop = min(start + CHUNK_USERS, num_users)
        chunk = keys[: stop - start]
        for row, user in enumerate(range(start, stop)):
            rng = np.random.default_rng([seed, POPULARITY_STREAM, first_user + user])
            rng.standard_exponential(num_items + 1, dtype=np.float32, out=chunk[row])
        chunk *= inverse_weight
        chunk[_seen_mask(flat, offsets, start, stop, num_items)] = np.inf
        chunk[:, 0] = np.inf
        picked = np.argpartition(chunk, n - 1, axis=1)[:, :n]
        order = np.argsort(np.take_along_axis(chunk, picked, axis=1), axis=1)
        negatives[start:stop] = np.take_along_axis(picked, order, axis=1)
    return negatives


def _inverse_weights(item_popularity):
    """1 / sampling weight per item, float64 [N + 1], with the zero-count floor."""
    positive = item_popularity[1:][item_popularity[1:] > 0]
    if positive.size == 0:
        return np.ones_like(item_popularity)
    weights = item_popularity / positive.max()
    floor = POPULARITY_FLOOR * positive.min() / positive.max()
    return 1.0 / np.maximum(weights, floor)


def _seen_mask(flat, offsets, start, stop, num_items):
    """bool [stop - start, N + 1]: True where user start + row saw the item."""
    mask = np.zeros((stop - start, num_items + 1), dtype=bool)
    rows = np.repeat(np.arange(stop - start), np.diff(offsets[start : stop + 1]))
    mask[rows, flat[offsets[start] : offsets[stop]]] = True
    return mask


def _check_enough_unseen(flat, offsets, num_items, n, first_user=0):
    """Returns the number of distinct seen items (1..N) per user, int64 [U].

    Raises ValueError naming the first user with fewer than n unseen items
    (its index counts from ``first_user``).
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of negatives, got {n}")
    num_users = len(offsets) - 1
    users = np.repeat(np.arange(num_users), np.diff(offsets))
    pairs = np.unique(users[flat > 0] * (num_items + 1) + flat[flat > 0])
    num_seen = np.bincount(pairs // (num_items + 1), minlength=num_users)
    unseen = num_items - num_seen
    short = np.flatnonzero(unseen < n)
    if short.size:
        user = short[0]
        raise ValueError(
            f"user {first_user + user} has {unseen[user]} unseen items ({num_seen[user]} of "
            f"{num_items} interacted), cannot draw {n} negatives "
            f"({short.size} user(s) affected)"
        )
    return num_seen


def _check_seed(seed):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
