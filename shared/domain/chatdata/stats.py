"""Exact distribution statistics with memory bounded by the number of distinct values, not rows."""

from __future__ import annotations

import math


class Distribution:
    """Counts of integer observations; min/mean/percentiles are exact (linear interpolation, as numpy's default)."""

    __slots__ = ("_counts", "count", "total")

    def __init__(self, counts: dict[int, int]) -> None:
        """From a {value: occurrences} table (the validator's hot loop fills a plain dict)."""
        self._counts = counts
        self.count = sum(counts.values())
        self.total = sum(value * n for value, n in counts.items())

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the observations."""
        if not self.count:
            raise ValueError("no observations")
        position = (self.count - 1) * q / 100
        lower_rank = math.floor(position)
        fraction = position - lower_rank
        lower: int | None = None
        upper: int | None = None
        seen = 0
        for value in sorted(self._counts):
            seen += self._counts[value]
            if lower is None and seen > lower_rank:
                lower = value
            if seen > lower_rank + 1 or (fraction == 0 and lower is not None):
                upper = value
                break
        assert lower is not None  # lower_rank < count, and the counts add up to count
        if upper is None:
            upper = lower
        return lower + (upper - lower) * fraction

    def summary(self) -> dict[str, float | int] | None:
        if not self.count:
            return None
        values = sorted(self._counts)
        return {
            "min": values[0],
            "mean": round(self.total / self.count, 2),
            "p50": round(self.percentile(50), 2),
            "p95": round(self.percentile(95), 2),
            "max": values[-1],
        }
