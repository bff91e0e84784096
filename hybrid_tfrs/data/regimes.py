"""Generated users of two regimes with different structure, to see whether the gate chooses.

Half the users are ``periodic``, half ``episodic``; the regime is in the user id
(``periodic-7``, ``episodic-8``), so an evaluation can be split by regime.

- ``periodic``: a personal playlist of ``period`` distinct items, played in
  order again and again from a random phase. The next item is always the one
  ``period`` steps back: a fixed lag, which a position-invariant filter
  represents exactly (one tap) and which attention must find by position.
- ``episodic``: episodes of ``a, b, filler, ..., filler, partner(a),
  partner(b)``: two distinct anchors, 2..``max_gap`` fillers drawn at random,
  then the anchors' partners in the anchors' order. The partner of an anchor
  is a fixed item; so each partner depends on one item an unknown number of
  steps back, and the fillers in between carry no signal. Anchors, partners
  and fillers are three disjoint item pools; playlists draw from the fillers'
  pool too, so an item's popularity does not tell the regime.

Every user's sequence ends with two predictable items (the playlist's next
ones, or an episode's two partners), so both the leave-one-out validation and
test targets are ones the structure decides.
"""

import numpy as np

__all__ = ["REGIMES", "generate_regimes", "regime_of"]

REGIMES = ("periodic", "episodic")


def regime_of(user_id):
    """The regime of a generated user id: ``"periodic"`` or ``"episodic"``."""
    regime = str(user_id).split("-", 1)[0]
    if regime not in REGIMES:
        raise ValueError(f"user id {user_id!r} is not one of generate_regimes' ids")
    return regime


def generate_regimes(
    num_users=1000, length=40, period=4, num_anchors=30, num_fillers=200, max_gap=8, seed=0
):
    """Generates the two-regime users; the same arguments always give the same data.

    Args:
        num_users: users, half of each regime (periodic first when odd).
        length: items a user (the last one completes a playlist cycle or an episode).
        period: playlist length of the periodic users (distinct items).
        num_anchors: anchor items (and as many partner items).
        num_fillers: filler items (playlists draw from them too).
        max_gap: most fillers inside an episode (at least 2).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``[("periodic-1", ["i12", ...]), ...]``, the reader format; item ids
        ``a*`` anchors, ``p*`` partners, ``f*`` fillers.
    """
    if period < 2 or period > num_fillers:
        raise ValueError(f"period must be in 2..num_fillers={num_fillers}, got {period}")
    if max_gap < 2 or length < max_gap + 4:
        raise ValueError(f"need max_gap >= 2 and length >= max_gap + 4, got {max_gap}, {length}")
    if num_anchors < 2:
        raise ValueError(f"need num_anchors >= 2, got {num_anchors}")
    rng = np.random.default_rng(seed)
    partner = rng.permutation(num_anchors)
    users = []
    for user in range(num_users):
        if user % 2 == 0:
            playlist = rng.choice(num_fillers, size=period, replace=False)
            phase = rng.integers(period)
            items = [f"f{playlist[(phase + t) % period]}" for t in range(length)]
            users.append((f"periodic-{user + 1}", items))
        else:
            items = _episodes(rng, length, partner, num_fillers, max_gap)
            users.append((f"episodic-{user + 1}", items))
    return users


def _episodes(rng, length, partner, num_fillers, max_gap):
    """``length`` items of back-to-back episodes, the last one complete."""
    items = []
    while True:
        first, second = rng.choice(len(partner), size=2, replace=False)
        gap = int(rng.integers(2, max_gap + 1))
        fillers = [f"f{f}" for f in rng.integers(num_fillers, size=gap)]
        episode = [f"a{first}", f"a{second}", *fillers, f"p{partner[first]}", f"p{partner[second]}"]
        room = length - len(items)
        if room < len(episode):
            break
        items += episode
    # Pad at the front with fillers so that the sequence ends with a complete episode.
    return [f"f{f}" for f in rng.integers(num_fillers, size=length - len(items))] + items
