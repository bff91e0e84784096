"""The two-regime generator of the gate benchmark: structure the benchmark relies on."""

import pytest

from hybrid_tfrs.data.regimes import generate_regimes, regime_of


def test_regimes_have_the_structure_they_promise():
    users = generate_regimes(num_users=40, length=30, period=5, max_gap=6, seed=3)
    assert users == generate_regimes(num_users=40, length=30, period=5, max_gap=6, seed=3)
    assert [regime_of(u) for u, _ in users].count("periodic") == 20
    partners = {}
    for user, items in users:
        assert len(items) == 30
        if regime_of(user) == "periodic":
            assert len(set(items)) == 5
            assert all(items[t] == items[t - 5] for t in range(5, 30))
            continue
        assert items[-1].startswith("p")  # the test target completes an episode
        anchors = [t for t, item in enumerate(items) if item.startswith("a")]
        for start in anchors:
            end = next(t for t in range(start + 1, 30) if not items[t].startswith("f"))
            assert items[end].startswith("p") and 3 <= end - start <= 7
            # An anchor always leads to the same partner, whoever the user.
            assert partners.setdefault(items[start], items[end]) == items[end]


def test_regime_of_rejects_foreign_ids():
    with pytest.raises(ValueError, match="not one of generate_regimes' ids"):
        regime_of("u17")
