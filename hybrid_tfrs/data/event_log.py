"""A generated interaction log (one event a row), for the own-data tests and benchmarks."""

import numpy as np

__all__ = ["generate_events", "write_csv"]


def generate_events(num_users, num_items, num_events, seed=0):
    """Random events with Zipf-like item popularity and coarse times (so some tie).

    Returns:
        ``(users, items, times)``: str arrays ``u<k>``, ``i<k>`` and int64 times,
        each [num_events], in no particular order.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, num_users, num_events)
    popularity = 1.0 / np.arange(1, num_items + 1)
    items = rng.choice(num_items, num_events, p=popularity / popularity.sum())
    times = rng.integers(0, max(num_events // num_users, 1) * 4, num_events)
    return (
        np.char.add("u", users.astype(str)),
        np.char.add("i", items.astype(str)),
        times.astype(np.int64),
    )


def write_csv(path, users, items, times, header=("user_id", "item_id", "timestamp")):
    """Writes the events as CSV with a header row, fast (pyarrow)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(dict(zip(header, (users, items, times))))
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
