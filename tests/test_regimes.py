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
        # The validation and test targets complete an episode.
        assert items[-2].startswith("p") and items[-1].startswith("p")
        starts = [t for t in range(29) if items[t].startswith("a") and items[t + 1].startswith("a")]
        for start in starts:
            end = next(t for t in range(start + 2, 30) if items[t].startswith("p"))
            assert 4 <= end - start <= 8 and items[end + 1].startswith("p")
            # An anchor always leads to the same partner, whoever the user, in order.
            for anchor, partner in ((items[start], items[end]), (items[start + 1], items[end + 1])):
                assert partners.setdefault(anchor, partner) == partner


def test_regime_of_rejects_foreign_ids():
    with pytest.raises(ValueError, match="not one of generate_regimes' ids"):
        regime_of("u17")
