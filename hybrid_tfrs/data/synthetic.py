"""A generated dataset with learnable sequential structure, for the default run and tests."""

import numpy as np

__all__ = ["SYNTHETIC_DEFAULTS", "generate_synthetic"]

SYNTHETIC_DEFAULTS = {
    "num_users": 2000,
    "num_items": 400,
    "min_len": 20,
    "max_len": 120,
    "seed": 0,
    "num_genres": 8,
    "noise": 0.1,
}

_ZIPF_EXPONENT = 1.0  # item popularity within a genre ~ 1 / rank
_PRIMARY_SHARE = 0.8  # taste clicks from the user's main genre; the rest from a second one
_BURST_START = 0.3  # chance that a taste click starts a burst
_BURST_LENGTHS = (2, 5)  # a burst adds 2..4 successor items
_FAVOURITES = (1, 4)  # 1..3 favourite items a user
_PERIODS = (4, 13)  # a favourite comes back every 4..12 steps
_LENGTH_BETA = (2.0, 3.0)  # length = min_len + (max_len - min_len) * Beta(2, 3): mean 60 by default


def generate_synthetic(
    num_users=2000, num_items=400, min_len=20, max_len=120, seed=0, num_genres=8, noise=0.1
):
    """Generates users' item sequences; the same arguments always give the same data.

    Items ``i1..iN`` are cut into ``num_genres`` equal blocks of consecutive ids
    (genres; leftover ids occur only as noise). Within a genre, item popularity
    is Zipf-like (rank r ~ 1/r, the lowest ids most popular). Each user ``uK`` has:

    - a length ``min_len + (max_len - min_len) * Beta(2, 3)`` (mean 60 by default);
    - a long-term taste: a main genre (80 % of taste clicks) and a second genre;
    - 1..3 favourite items of the main genre, each repeated with its own fixed
      period (4..12 steps) and phase: periodic re-consumption;
    - bursts: 30 % of taste clicks start a run of 2..4 successor items
      ``i -> i+1 -> i+2`` (wrapping inside the genre);
    - noise: each step is, with probability ``noise``, a uniformly random item.

    Step order: noise, else a favourite that is due, else the running burst,
    else a taste click. All randomness comes from ``numpy.random.default_rng(seed)``.

    Returns:
        ``[("u1", ["i7", ...]), ...]``, the reader format.
    """
    genre_size = num_items // num_genres
    if num_genres < 2 or genre_size < 5:
        raise ValueError(
            f"need num_genres >= 2 and at least 5 items a genre, got {num_items} items "
            f"in {num_genres} genres"
        )
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a probability, got {noise}")
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, genre_size + 1) ** _ZIPF_EXPONENT
    zipf /= zipf.sum()
    users = []
    for user in range(1, num_users + 1):
        length = min_len + int(round((max_len - min_len) * rng.beta(*_LENGTH_BETA)))
        items = _user_sequence(rng, length, num_items, num_genres, genre_size, zipf, noise)
        users.append((f"u{user}", [f"i{item + 1}" for item in items]))
    return users


def _user_sequence(rng, length, num_items, num_genres, genre_size, zipf, noise):
    """One user's sequence of 0-based item numbers."""
    main, second = rng.choice(num_genres, size=2, replace=False)
    num_favourites = rng.integers(*_FAVOURITES)
    favourites = main * genre_size + rng.choice(genre_size, num_favourites, replace=False, p=zipf)
    periods = rng.integers(*_PERIODS, size=num_favourites)
    phases = rng.integers(0, periods)
    # Per-step draws, made up front so the loop only picks among them.
    is_noise = rng.random(length) < noise
    noise_items = rng.integers(num_items, size=length)
    taste_genres = np.where(rng.random(length) < _PRIMARY_SHARE, main, second)
    taste_items = taste_genres * genre_size + rng.choice(genre_size, length, p=zipf)
    starts_burst = rng.random(length) < _BURST_START
    burst_lengths = rng.integers(*_BURST_LENGTHS, size=length)
    due = np.full(length, -1)  # the favourite due at each step; the first listed wins
    for favourite, period, phase in reversed(list(zip(favourites, periods, phases))):
        due[phase::period] = favourite

    sequence = []
    burst_item, burst_left = 0, 0
    for step in range(length):
        if is_noise[step]:
            item = noise_items[step]
        elif due[step] >= 0:
            item = due[step]
        elif burst_left:
            genre_start = burst_item // genre_size * genre_size
            item = burst_item = genre_start + (burst_item - genre_start + 1) % genre_size
            burst_left -= 1
        else:
            item = burst_item = taste_items[step]
            burst_left = burst_lengths[step] if starts_burst[step] else 0
        sequence.append(int(item))
    return sequence
