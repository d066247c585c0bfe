"""Issue 15's fault-injection suite: SIGKILL at seeded random points in fit, predict, scoring and the judge
cache append, and a judge server that answers 429 (Retry-After) / 500 / hang / non-JSON 200 / no choices /
non-score / valid. Every killed run, resumed, ends with the results, samples, predictions and artifacts of an
uninterrupted run; no request whose answer was already cached is sent again (the only repeated paid calls are
the ones in flight at a kill); every unreadable reply is a failed sample, counted; the API key is in no file.

The jobs (tests/helpers/fault_injection.py) run a user's own small method through ``unifybench.run`` and
score with the judge evaluators; the uninterrupted reference runs in-process, the killed runs are
subprocesses. A kill point is found by watching the files a stage writes (train log lines, images, judge
cache lines), never by a hook in the product. ``UNIFYBENCH_FAULT_SEED`` draws other kill points (default 15).
The real tiny Yo'Chameleon, killed at five points, is tests/test_resume_and_ranks.py (slow: minutes).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_injection import CONCEPTS, FAST, JUDGE_MODEL, PainterConfig, run_judge, run_pipeline
from judge_server import FakeJudge, messages_hash

from unifybench.judge import JudgeCache, request_key

SEED = int(os.environ.get("UNIFYBENCH_FAULT_SEED", "15"))
KEY = "sk-fault-injection-7d41c0ffee"
HELPERS = Path(__file__).parent / "helpers"
# 429 first: a request that starts there meets every retryable fault on its way to a score.
ROTATION = ["429", "500", "hang", "valid", "nonjson", "nochoices", "garbage"]
RETRY_AFTER = 1.0
PIPELINE_WORKERS = 4          # judge_qa's default: requests in flight when the pipeline is killed
PROMPT_VERSIONS = ("qa-v1", "t2i-v1")


@pytest.fixture(scope="module")
def api_key():
    mp = pytest.MonkeyPatch()
    mp.delenv("OPENAI_API_KEY", raising=False)
    mp.setenv("UNIFYBENCH_JUDGE_API_KEY", KEY)
    yield KEY
    mp.undo()


def command(job: str, out: Path, cache: Path, base_url: str) -> list[str]:
    return [sys.executable, "-c", "import fault_injection; fault_injection.main()", job, str(out), str(cache),
            base_url]


def environment() -> dict:
    path = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, UNIFYBENCH_JUDGE_API_KEY=KEY, OMP_NUM_THREADS="1")


def kill_when(cmd: list[str], condition, what: str, logs: list[str]) -> None:
    """Start `cmd`, SIGKILL it as soon as `condition()` holds; fail if it ended first."""
    proc = subprocess.Popen(cmd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    logs.append(output)
    assert alive, f"the job ended before the kill point ({what}), exit {proc.returncode}:\n{output[-3000:]}"
    assert proc.returncode == -signal.SIGKILL


def finish(cmd: list[str], logs: list[str]) -> None:
    proc = subprocess.run(cmd, env=environment(), capture_output=True, text=True, timeout=300)
    logs.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def cached_keys(cache: Path) -> set[str]:
    """The keys of the whole lines of the judge cache: the replies a kill now cannot lose."""
    path, keys = cache / "judge" / "replies.jsonl", set()
    for line in path.read_bytes().splitlines(keepends=True) if path.exists() else []:
        if line.endswith(b"\n"):
            try:
                keys.add(json.loads(line)["key"])
            except ValueError:
                pass   # the torn line
    return keys


def without_run_facts(obj):
    """A result or sample without what differs between a run and its resume by design: whether a judge reply
    came from the cache, and the judge's cost counters (calls, cache hits, tokens) of this process."""
    if isinstance(obj, dict):
        out = {k: without_run_facts(v) for k, v in obj.items() if k != "cached"}
        if isinstance(obj.get("judge"), dict) and "calls" in obj["judge"]:
            out["judge"] = {k: obj["judge"][k] for k in ("model", "prompt_version") if k in obj["judge"]}
        return out
    if isinstance(obj, list):
        return [without_run_facts(v) for v in obj]
    return obj


def outcome(out: Path) -> dict:
    """Everything a run produced that a resume must reproduce."""
    doc = json.loads((out / "results.json").read_text())
    got = {"results": without_run_facts(doc["results"]),
           "samples": {f.name: [without_run_facts(json.loads(l)) for l in f.read_text().splitlines()]
                       for f in sorted((out / "samples").glob("*.jsonl"))}}
    for c in sorted((out / "concepts").glob("*")) if (out / "concepts").is_dir() else []:
        got[c.name] = {"predictions": (c / "predictions.jsonl").read_text(),
                       "losses": [json.loads(l)["loss"] for l in (c / "train_log.jsonl").read_text().splitlines()],
                       "files": {str(f.relative_to(c)): f.read_bytes() for f in sorted(c.rglob("*"))
                                 if f.suffix in (".safetensors", ".png")}}
    return got


def key_of_request(judge: FakeJudge) -> dict[str, str]:
    """Judge cache key -> the server's name of that request (the hash of its messages), for every request the
    server saw: the cache key recomputed from the request body (model, settings, messages)."""
    out = {}
    for body in judge.requests:
        settings = {k: body[k] for k in ("temperature", "seed", "max_tokens")}
        for version in PROMPT_VERSIONS:
            out[request_key(body["model"], version, settings, body["messages"])] = messages_hash(body)
    return out


def paid(log: list[dict]) -> Counter:
    """Scores delivered per request (what a real judge bills and the client can keep)."""
    return Counter(e["request"] for e in log if e["kind"] == "valid")


def assert_key_nowhere(folders: list[Path], logs: list[str]) -> None:
    for folder in folders:
        for f in folder.rglob("*"):
            if f.is_file():
                assert KEY.encode() not in f.read_bytes(), f"the API key is written in {f}"
    assert not any(KEY in text for text in logs)


# ------------------------------------------------------------------ the pipeline: fit, predict, score, judge

@pytest.fixture(scope="module")
def pipeline_judge(api_key):
    with FakeJudge(expected_key=KEY, model=JUDGE_MODEL, seed=0, reply_delay=0.05) as judge:
        yield judge


@pytest.fixture(scope="module")
def pipeline_reference(tmp_path_factory, pipeline_judge):
    out, cache = tmp_path_factory.mktemp("pipeline_reference"), tmp_path_factory.mktemp("pipeline_cache")
    n0 = len(pipeline_judge.log)
    run_pipeline(out, cache, pipeline_judge.base_url)
    return outcome(out), pipeline_judge.log[n0:]


def test_pipeline_killed_in_fit_predict_and_judge_append_resumes_to_identical_results(
        tmp_path, pipeline_judge, pipeline_reference):
    reference, reference_log = pipeline_reference
    assert not pipeline_judge.violations and max(paid(reference_log).values()) == 1
    n_judged = len(reference_log)
    rng = random.Random(SEED)
    out, cache = tmp_path / "run", tmp_path / "cache"
    cmd = command("pipeline", out, cache, pipeline_judge.base_url)
    concept_dir = {c: out / "concepts" / c for c in CONCEPTS}
    logs: list[str] = []
    n0 = len(pipeline_judge.log)

    # 1. inside fit: after a random optimizer step of a random concept
    c, step = rng.choice(CONCEPTS), rng.randint(2, PainterConfig.steps - 6)
    kill_when(cmd, lambda: lines(concept_dir[c] / "train_log.jsonl") >= step, f"fit of {c}, step {step}", logs)
    assert not (concept_dir[c] / "fit.json").exists(), "the kill missed the fit"

    # 2. inside predict: after a random image of a concept not finished yet
    c = rng.choice([c for c in CONCEPTS if not (concept_dir[c] / "unit.json").exists()])
    image, started = rng.randint(1, 5), time.time_ns()

    def images_drawn() -> int:
        folder = concept_dir[c] / "images"
        return sum(1 for f in folder.glob("*.png") if f.stat().st_mtime_ns >= started) if folder.is_dir() else 0
    kill_when(cmd, lambda: images_drawn() >= image, f"predict of {c}, image {image}", logs)
    assert (concept_dir[c] / "fit.json").exists() and not (concept_dir[c] / "unit.json").exists(), \
        "the kill missed the predict stage"

    # 3. inside scoring, between judge cache appends
    replies = cache / "judge" / "replies.jsonl"
    line = rng.randint(1, n_judged - 2 * PIPELINE_WORKERS)
    kill_when(cmd, lambda: lines(replies) >= line, f"judge cache line {line}", logs)
    assert all((d / "unit.json").exists() for d in concept_dir.values()) and not (out / "results.json").exists()
    kept = cached_keys(cache)
    seen = len(pipeline_judge.log)

    finish(cmd, logs)
    assert outcome(out) == reference
    # No request answered before the kill is sent again; at most the ones in flight then are paid twice.
    name = key_of_request(pipeline_judge)
    assert kept and kept <= set(name), "cache keys must map to requests, or the next check proves nothing"
    again = {e["request"] for e in pipeline_judge.log[seen:]}
    assert not again & {name[k] for k in kept}
    twice = [r for r, n in paid(pipeline_judge.log[n0:]).items() if n > 1]
    assert len(twice) <= PIPELINE_WORKERS and not pipeline_judge.violations
    assert_key_nowhere([out, cache], logs)


# ------------------------------------------------------------------ the judge: every kind of bad reply

def fault_judge():
    return FakeJudge(expected_key=KEY, model=JUDGE_MODEL, seed=0, rotate=ROTATION, retry_after=str(int(RETRY_AFTER)),
                     slow_seconds=2 * FAST["timeout"])


@pytest.fixture(scope="module")
def judge_reference(tmp_path_factory, api_key):
    out, cache = tmp_path_factory.mktemp("judge_reference"), tmp_path_factory.mktemp("judge_cache")
    with fault_judge() as judge:
        run_judge(out, cache, judge.base_url)
    return outcome(out), list(judge.log), judge.violations


def assert_retries_waited(log: list[dict]) -> None:
    """Every 429 is retried no sooner than its Retry-After; a hang is retried after the client's timeout."""
    by_request: dict[str, list[dict]] = {}
    for e in log:
        by_request.setdefault(e["request"], []).append(e)
    for attempts in by_request.values():
        for a, b in zip(attempts, attempts[1:]):
            wait = b["t"] - a["t"]
            if a["kind"] == "429":
                assert wait >= RETRY_AFTER - 0.01, f"retried {wait:.2f} s after a 429 with Retry-After {RETRY_AFTER}"
            if a["kind"] == "hang":
                assert wait >= FAST["timeout"] - 0.01


def test_judge_reference_meets_every_fault_counts_failures_and_pays_once(judge_reference):
    (reference, log, violations), n_kinds = judge_reference, len(ROTATION)
    assert not violations
    assert set(e["kind"] for e in log) == set(ROTATION)
    last = {e["request"]: e["kind"] for e in log}            # what each request ended with
    assert len(last) == 2 * n_kinds and max(paid(log).values()) == 1
    assert_retries_waited(log)
    # the retryable faults were retried to a score; every unreadable reply is one failed sample, never a score
    ended = Counter(last.values())
    assert ended == {"valid": 8, "nonjson": 2, "nochoices": 2, "garbage": 2}
    results = reference["results"]
    assert sum(r["n"] for r in results.values()) == ended["valid"]
    assert sum(r["n_failed"] for r in results.values()) == 6
    rows = [r for rows in reference["samples"].values() for r in rows]
    failed = Counter("unreadable judge reply" if "unreadable judge reply" in r["failed"] else
                     "no choices" if "no choices" in r["failed"] else
                     "unparsable" if "unparsable" in r["failed"] else r["failed"] for r in rows if r.get("failed"))
    assert failed == {"unreadable judge reply": 2, "no choices": 2, "unparsable": 2}
    assert all(r["score"] is None for r in rows if r.get("failed"))


def test_judge_killed_during_a_cache_append_resumes_past_the_torn_line_to_identical_scores(tmp_path, judge_reference):
    reference, reference_log, _ = judge_reference
    n_valid = sum(paid(reference_log).values())
    rng = random.Random(SEED + 1)
    out, cache = tmp_path / "run", tmp_path / "cache"
    replies = cache / "judge" / "replies.jsonl"
    logs: list[str] = []
    with fault_judge() as judge:
        cmd = command("judge", out, cache, judge.base_url)
        # killed after a random cache append, then its last line torn as a kill in mid-append leaves it
        line = rng.randint(2, n_valid - 4)
        kill_when(cmd, lambda: lines(replies) >= line, f"judge cache line {line}", logs)
        kept = cached_keys(cache)
        whole = replies.read_bytes().splitlines(keepends=True)
        torn_key = json.loads(whole[-1])["key"]
        replies.write_bytes(b"".join(whole[:-1]) + whole[-1][: len(whole[-1]) // 2])
        kept.discard(torn_key)
        assert JudgeCache(replies).skipped_lines == 1
        seen = len(judge.log)
        finish(cmd, logs)

        assert outcome(out) == reference
        assert not judge.violations
        assert_retries_waited(judge.log)
        name = key_of_request(judge)
        assert kept and kept <= set(name), "cache keys must map to requests, or the next check proves nothing"
        assert not {e["request"] for e in judge.log[seen:]} & {name[k] for k in kept}
        # Paid twice: only the torn reply and the one in flight at the kill (one worker).
        twice = {r for r, n in paid(judge.log).items() if n > 1}
        assert name[torn_key] in twice and len(twice) <= 1 + FAST["workers"]
        assert max(paid(judge.log).values()) == 2
    # The torn line stays skipped, and every append after it started a clean line.
    final = JudgeCache(replies)
    assert final.skipped_lines == 1 and len(final) == n_valid
    assert_key_nowhere([out, cache], logs)
