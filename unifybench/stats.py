"""Intervals for aggregates: a seeded bootstrap clustered by concept, and paired differences of two runs.

Every aggregate in results.json is the mean of per-concept values (each concept weighs the same,
however many items it has), so the concept is the unit that varies: the bootstrap resamples concepts
with replacement and takes the mean of their values. Items inside a concept are never resampled on
their own; that would pretend the items of one concept are independent and give intervals that are
too narrow.

Algorithm (fixed, so an independent re-implementation gives the same numbers):
  values  = the non-None per-concept values, in sorted concept-name order
  rng     = numpy.random.default_rng(seed)
  indices = rng.integers(0, n, size=(iterations, n))     # drawn in row blocks; same stream
  means   = values[indices].mean(axis=1)
  low, high = numpy.quantile(means, [(1 - level) / 2, (1 + level) / 2])   # percentile interval,
                                                                          # numpy's default "linear"
None (and NaN) values are excluded and counted in `n_excluded`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

METHOD = "cluster bootstrap over concepts"
PAIRED_METHOD = "paired cluster bootstrap over shared concepts"
_BLOCK = 1 << 20   # indices drawn per block, to bound memory for many concepts


def _usable(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _check(iterations: int, level: float) -> None:
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _bootstrap_means(values, seed: int, iterations: int):
    """Means of `iterations` resamples (with replacement) of `values`; deterministic in `seed`."""
    import numpy as np
    arr = np.asarray(values, dtype=np.float64)
    n = arr.shape[0]
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK // n)
    out = np.empty(iterations, dtype=np.float64)
    for start in range(0, iterations, rows):
        stop = min(iterations, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = arr[idx].mean(axis=1)
    return out


def _interval(means, level: float) -> tuple[float, float]:
    import numpy as np
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_ci(per_concept: Mapping[str, float | None], seed: int, iterations: int = 10000,
                 level: float = 0.95) -> dict[str, Any]:
    """Percentile interval of the mean of per-concept values, resampling concepts with replacement.

    Returns ``{low, high, level, iterations, seed, n_concepts, n_excluded, method}``; ``low``/``high``
    are None when no concept has a value. With one concept the interval is that value (zero width).
    """
    _check(iterations, level)
    names = sorted(per_concept)
    values = [float(per_concept[c]) for c in names if _usable(per_concept[c])]
    out: dict[str, Any] = {"low": None, "high": None, "level": level, "iterations": iterations,
                           "seed": seed, "n_concepts": len(values),
                           "n_excluded": len(names) - len(values), "method": METHOD}
    if values:
        out["low"], out["high"] = _interval(_bootstrap_means(values, seed, iterations), level)
    return out


def paired_difference(a: Mapping[str, float | None], b: Mapping[str, float | None], seed: int,
                      iterations: int = 10000, level: float = 0.95) -> dict[str, Any]:
    """Mean of (b - a) over the concepts both runs have a value for, with its bootstrap interval.

    The concept differences are resampled together (paired), so concept difficulty cancels out.
    Returns ``{diff, low, high, level, iterations, seed, n_shared, only_a, only_b, method,
    excludes_zero}``; ``only_a``/``only_b`` count concepts with a value in one run only (not used).
    """
    _check(iterations, level)
    has_a = {c for c, v in a.items() if _usable(v)}
    has_b = {c for c, v in b.items() if _usable(v)}
    shared = sorted(has_a & has_b)
    diffs = [float(b[c]) - float(a[c]) for c in shared]
    out: dict[str, Any] = {"diff": None, "low": None, "high": None, "level": level, "iterations": iterations,
                           "seed": seed, "n_shared": len(shared), "only_a": len(has_a - has_b),
                           "only_b": len(has_b - has_a), "method": PAIRED_METHOD, "excludes_zero": None}
    if diffs:
        out["diff"] = sum(diffs) / len(diffs)
        out["low"], out["high"] = _interval(_bootstrap_means(diffs, seed, iterations), level)
        out["excludes_zero"] = out["low"] > 0 or out["high"] < 0
    return out
