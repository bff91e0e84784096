"""Results pages that grow by one section a run (bucket_widths.py, epoch_cost.py)."""

import os


def append_section(path, title, script, section):
    """Appends ``section`` (markdown) to ``path``, starting a new page with ``title``
    (and that ``script`` appends to it) if there is none yet."""
    if not os.path.exists(path):
        section = f"# {title}\n\nAppended by {script}, newest last.\n" + section
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(section)
