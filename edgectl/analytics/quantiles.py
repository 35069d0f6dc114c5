"""Quantiles from partial rank summaries, with a proven bound on the rank error.

A node sorts the values of its chunk and ships at most SUMMARY_POINTS of them with their
exact ranks: all of them when there are that few (the summary is then exact), else values
at evenly spaced ranks that always include the first and the last. Let W_p be the largest
number of values of chunk p that fall strictly between two shipped ranks (0 when exact).

The quantile q of N values is the nearest-rank one: the value of rank R = ceil(q * N). For
any value v, chunk p's count of values <= v, C_p(v), lies in an interval of width <= W_p
that its summary gives; the estimate is the interval's middle, off by <= W_p / 2, so the
total estimate is off by <= E = sum(W_p) / 2. The answer is the smallest shipped value v
whose estimate reaches R. Then C(v) >= R - E; and since no shipped value lies between v
and the shipped value just below it (whose estimate is < R, so its count < R + E), fewer
than R + E + 2E values are < v. So the rank range [#(< v) + 1, #(<= v)] of the answer is
within 3E = 1.5 * sum(W_p) of R: `rank_error_bound` below, rounded up. With evenly spaced
ranks W_p <= ceil((n_p - 1) / (SUMMARY_POINTS - 1)) - 1, about n_p / 1000, so the bound
is about 0.15 % of N however the data is split; it is 0 when every chunk shipped all values.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

SUMMARY_POINTS = 1001


def summarize(sorted_values: Sequence[float], points: int = SUMMARY_POINTS) -> dict[str, Any]:
    """The summary a node ships for sorted values: `v` (values) and `r` (1-based ranks).

    `r` is left out when every value is shipped (ranks 1..n). The node-side runner does
    the same; this copy serves tests and controller-side callers.
    """
    n = len(sorted_values)
    if n <= points:
        return {"v": list(sorted_values)}
    ranks = sorted({1 + j * (n - 1) // (points - 1) for j in range(points)})
    return {"v": [sorted_values[r - 1] for r in ranks], "r": ranks}


@dataclass(frozen=True)
class RankSummary:
    """One chunk's shipped values and their ranks among the chunk's n values."""

    values: tuple[float, ...]
    ranks: tuple[int, ...]
    n: int

    @classmethod
    def from_partial(cls, part: dict[str, Any], n: int) -> RankSummary:
        """Read and check a shipped summary of n values (ValueError when malformed)."""
        values = tuple(float(v) for v in part.get("v", []))
        ranks = tuple(int(r) for r in part["r"]) if "r" in part else tuple(range(1, n + 1))
        if len(values) != len(ranks) or (n > 0 and not values):
            raise ValueError("quantile summary: values and ranks do not match")
        if any(b <= a for a, b in itertools.pairwise(ranks)) or any(
            b < a for a, b in itertools.pairwise(values)
        ):
            raise ValueError("quantile summary: ranks or values out of order")
        if values and (ranks[0] != 1 or ranks[-1] != n):
            raise ValueError("quantile summary: the first and last values must be shipped")
        return cls(values, ranks, n)

    @property
    def width(self) -> int:
        """W: the most values of the chunk that lie strictly between two shipped ranks."""
        return max((b - a - 1 for a, b in itertools.pairwise(self.ranks)), default=0)

    def count_bounds(self, value: float) -> tuple[int, int]:
        """The least and the most values of the chunk that can be <= `value`."""
        index = bisect.bisect_right(self.values, value)
        low = self.ranks[index - 1] if index > 0 else 0
        high = self.ranks[index] - 1 if index < len(self.ranks) else self.n
        return low, high


def target_rank(q: float, n: int) -> int:
    """The nearest-rank target ceil(q * n), at least 1, computed without rounding error."""
    return max(1, math.ceil(Fraction(str(q)) * n))


def rank_error_bound(summaries: Sequence[RankSummary]) -> int:
    """The proven bound on the rank error of `quantile` over these chunks (module docstring)."""
    total = sum(s.width for s in summaries)
    return (3 * total + 1) // 2


def quantile(summaries: Sequence[RankSummary], q: float) -> float | None:
    """The nearest-rank q-quantile of all chunks together (None when there are no values)."""
    chunks = [s for s in summaries if s.n > 0]
    n = sum(s.n for s in chunks)
    if n == 0:
        return None
    target = 2 * target_rank(q, n)  # estimates are halves: compare doubled
    candidates = sorted({v for s in chunks for v in s.values})

    def doubled_estimate(value: float) -> int:
        return sum(sum(s.count_bounds(value)) for s in chunks)

    low, high = 0, len(candidates) - 1
    while low < high:  # the estimate grows with the value: binary search
        middle = (low + high) // 2
        if doubled_estimate(candidates[middle]) >= target:
            high = middle
        else:
            low = middle + 1
    return candidates[low]
