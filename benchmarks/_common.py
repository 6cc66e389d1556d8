"""Helpers shared by the benchmark scripts (not a test module): repo on sys.path, medians."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def median(values: list[float]) -> float:
    return statistics.median(values)
