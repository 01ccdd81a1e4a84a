"""The one test of a number read from a hand-checked config (sim and policy
options, model-server faults): an int or float, never a bool, and finite -- NaN slips through
every comparison (``nan < 0`` is false) and infinity through every ``>= 0``."""

from __future__ import annotations

import math
from typing import Any


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
