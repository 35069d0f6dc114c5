"""Exact merge of count, sum, mean, variance, min and max computed on separate chunks.

Each chunk reports n, sum, mean, M2 (the sum of squared deviations from its own mean), min
and max. Two chunks combine with the pairwise update of Chan, Golub and LeVeque (1979):

    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

which is exact in real arithmetic and, in floating point, as stable as a single pass of
Welford's algorithm over all the data. Sums are added with math.fsum (correctly rounded).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Moments:
    """Count, sum, mean, M2, min and max of some numbers."""

    n: int = 0
    total: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        """The moments of numbers at hand (two passes: exact sum, then deviations)."""
        data = list(values)
        if not data:
            return cls()
        mean = math.fsum(data) / len(data)
        m2 = math.fsum((x - mean) ** 2 for x in data)
        return cls(len(data), math.fsum(data), mean, m2, min(data), max(data))

    @classmethod
    def from_partial(cls, part: dict[str, Any]) -> Moments:
        """Read a node-side column summary (n, sum, mean, m2, min, max)."""
        n = int(part.get("n") or 0)
        if n <= 0:
            return cls()
        return cls(
            n,
            float(part["sum"]),
            float(part["mean"]),
            max(0.0, float(part["m2"])),
            float(part["min"]),
            float(part["max"]),
        )

    def merge(self, other: Moments) -> Moments:
        """The moments of both chunks together (Chan et al.)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(
            n,
            math.fsum((self.total, other.total)),
            mean,
            m2,
            min(self.low, other.low),
            max(self.high, other.high),
        )

    def variance(self) -> float | None:
        """The sample variance (n - 1 in the denominator); None below two values."""
        return self.m2 / (self.n - 1) if self.n >= 2 else None

    def std(self) -> float | None:
        """The sample standard deviation; None below two values."""
        variance = self.variance()
        return math.sqrt(variance) if variance is not None else None

    def stats(self) -> dict[str, float | int | None]:
        """count, sum, mean, std, min, max as a result shows them (None where undefined)."""
        empty = self.n == 0
        return {
            "count": self.n,
            "sum": self.total,
            "mean": None if empty else self.mean,
            "std": self.std(),
            "min": None if empty else self.low,
            "max": None if empty else self.high,
        }


def merge_all(parts: Iterable[Moments]) -> Moments:
    """Fold many chunks into one; the sum is the correctly rounded sum of every chunk's sum."""
    chunks = list(parts)
    merged = Moments()
    for part in chunks:
        merged = merged.merge(part)
    return replace(merged, total=math.fsum(part.total for part in chunks if part.n))
