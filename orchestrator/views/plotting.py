"""matplotlib for the charts of reports and comparisons, drawn to files (no display)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib  # lazy: orch's start-up (matplotlib only when drawing charts)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use (the backend is chosen first)

    return plt
