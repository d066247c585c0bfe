"""Cluster bootstrap over concepts and paired differences: hand-computed cases, an independent numpy
resampling, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unifybench.stats import bootstrap_ci, paired_difference


def _independent(values_by_concept: dict, seed: int, iterations: int, level: float = 0.95):
    """The documented algorithm written out directly: one big index draw, plain percentiles."""
    values = np.array([values_by_concept[c] for c in sorted(values_by_concept)
                       if values_by_concept[c] is not None], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(iterations, len(values)))
    means = values[idx].mean(axis=1)
    return np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])


PER_CONCEPT = {"dog": 0.9, "cat": 0.4, "mug": 0.65, "bo": 0.2, "mam": 0.75, "shield": 0.55}


def test_matches_independent_numpy_resampling():
    ci = bootstrap_ci(PER_CONCEPT, seed=7, iterations=5000)
    low, high = _independent(PER_CONCEPT, seed=7, iterations=5000)
    assert ci["low"] == pytest.approx(low, abs=1e-12)
    assert ci["high"] == pytest.approx(high, abs=1e-12)
    assert ci["method"] == "cluster bootstrap over concepts"
    assert ci["iterations"] == 5000 and ci["n_concepts"] == 6 and ci["n_excluded"] == 0


def test_block_drawing_equals_one_draw(monkeypatch):
    # Many concepts force several index blocks; the stream must equal one big draw.
    import unifybench.stats as stats
    monkeypatch.setattr(stats, "_BLOCK", 64)
    many = {f"c{i:03d}": (i * 37 % 101) / 100 for i in range(40)}
    ci = bootstrap_ci(many, seed=3, iterations=1000)
    low, high = _independent(many, seed=3, iterations=1000)
    assert (ci["low"], ci["high"]) == pytest.approx((low, high), abs=1e-12)


def test_deterministic_with_a_seed_and_independent_of_dict_order():
    a = bootstrap_ci(PER_CONCEPT, seed=11)
    b = bootstrap_ci(dict(reversed(list(PER_CONCEPT.items()))), seed=11)
    assert a == b
    c = bootstrap_ci(PER_CONCEPT, seed=12)
    assert (c["low"], c["high"]) != (a["low"], a["high"])


def test_hand_computed_two_concepts():
    # Concepts 0 and 1: resample means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles are exactly 0 and 1 (each end has ~25% mass).
    ci = bootstrap_ci({"a": 0.0, "b": 1.0}, seed=0, iterations=10000)
    assert ci["low"] == 0.0 and ci["high"] == 1.0
    # 50% interval: quartiles of {0: .25, .5: .5, 1: .25} are 0.5 and 0.5 up to sampling noise at the
    # boundary; any value outside [0, 1] would be wrong.
    mid = bootstrap_ci({"a": 0.0, "b": 1.0}, seed=0, iterations=10000, level=0.4)
    assert mid["low"] == 0.5 and mid["high"] == 0.5


def test_degenerate_cases_and_none_values():
    assert bootstrap_ci({"a": 0.3}, seed=0)["low"] == pytest.approx(0.3)
    same = bootstrap_ci({"a": 0.5, "b": 0.5, "c": 0.5}, seed=0)
    assert same["low"] == pytest.approx(0.5) and same["high"] == pytest.approx(0.5)
    ci = bootstrap_ci({"a": 0.2, "b": None, "c": 0.8, "d": float("nan")}, seed=1, iterations=2000)
    assert ci["n_concepts"] == 2 and ci["n_excluded"] == 2
    low, high = _independent({"a": 0.2, "c": 0.8}, seed=1, iterations=2000)
    assert (ci["low"], ci["high"]) == pytest.approx((low, high))
    empty = bootstrap_ci({"a": None}, seed=0)
    assert empty["low"] is None and empty["high"] is None and empty["n_excluded"] == 1
    assert bootstrap_ci({}, seed=0)["low"] is None


def test_width_close_to_the_normal_approximation():
    rng = np.random.default_rng(5)
    vals = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, size=40))}
    x = np.array(list(vals.values()))
    se = x.std(ddof=0) / math.sqrt(len(x))     # the ideal bootstrap's standard error of the mean
    ci = bootstrap_ci(vals, seed=0, iterations=20000)
    assert ci["low"] < x.mean() < ci["high"]
    assert (ci["high"] - ci["low"]) == pytest.approx(2 * 1.96 * se, rel=0.08)


def test_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_ci(PER_CONCEPT, seed=0, iterations=0)
    with pytest.raises(ValueError):
        bootstrap_ci(PER_CONCEPT, seed=0, level=1.0)


def test_paired_difference_over_shared_concepts():
    a = {"dog": 0.5, "cat": 0.4, "mug": 0.7, "bo": None, "only_a": 0.1}
    b = {"dog": 0.6, "cat": 0.6, "mug": 0.6, "bo": 0.9, "only_b": 0.3}
    d = paired_difference(a, b, seed=4, iterations=4000)
    assert d["n_shared"] == 3 and d["only_a"] == 1 and d["only_b"] == 2   # bo has no value in A
    assert d["diff"] == pytest.approx((0.1 + 0.2 - 0.1) / 3)
    low, high = _independent({"cat": 0.2, "dog": 0.1, "mug": -0.1}, seed=4, iterations=4000)
    assert (d["low"], d["high"]) == pytest.approx((low, high), abs=1e-12)
    assert d == paired_difference(a, b, seed=4, iterations=4000)


def test_paired_difference_constant_shift_and_no_overlap():
    a = {c: v for c, v in PER_CONCEPT.items()}
    b = {c: v + 0.05 for c, v in PER_CONCEPT.items()}
    d = paired_difference(a, b, seed=0)
    # every concept moved by the same amount: the paired interval has zero width (concept difficulty cancels)
    assert d["diff"] == pytest.approx(0.05)
    assert d["low"] == pytest.approx(0.05) and d["high"] == pytest.approx(0.05)
    assert d["excludes_zero"] is True
    same = paired_difference(a, a, seed=0)
    assert same["diff"] == 0 and same["excludes_zero"] is False
    none = paired_difference({"x": 0.1}, {"y": 0.2}, seed=0)
    assert none["n_shared"] == 0 and none["diff"] is None and none["low"] is None


# ------------------------------------------------------------------------------- unifybench compare

def _run(folder, per_concept: dict, tiny: bool = False):
    import json
    res = {"value": float(np.mean([v for v in per_concept.values() if v is not None])), "n": 10, "n_failed": 0,
           "per_concept": per_concept, "preset": "default"}
    doc = {"tiny": tiny, "config": {"method": {"name": "m", "preset": "paper"}, "seed": 0,
                                    "evaluators": {"recognition": {"higher_is_better": True}}},
           "results": {"unifybench-mini": {"recognition": res}}}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


def test_compare_cli(tmp_path, capsys):
    import json
    from unifybench.cli import main as cli_main
    a = _run(tmp_path / "a", {"dog": 0.5, "cat": 0.4, "mug": 0.6, "bo": 0.3})
    b = _run(tmp_path / "b", {"dog": 0.7, "cat": 0.6, "mug": 0.75, "bo": 0.5, "new": 0.1}, tiny=True)
    assert cli_main(["compare", str(a), str(b), "--format", "json", "--iterations", "2000", "--seed", "3"]) == 0
    got = json.loads(capsys.readouterr().out)["metrics"][0]
    want = paired_difference({"dog": 0.5, "cat": 0.4, "mug": 0.6, "bo": 0.3},
                             {"dog": 0.7, "cat": 0.6, "mug": 0.75, "bo": 0.5, "new": 0.1}, seed=3, iterations=2000)
    assert got["diff"] == pytest.approx(want["diff"]) and got["low"] == pytest.approx(want["low"])
    assert got["n_shared"] == 4 and got["only_b"] == 1
    assert cli_main(["compare", str(a), str(b / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "B better" in out and "+0.1875" in out and "tiny random models" in out
    assert cli_main(["compare", str(a), str(tmp_path / "missing")]) == 2
