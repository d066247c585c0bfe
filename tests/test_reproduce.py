"""`unifybench reproduce`: the planner on every spec, the local launcher killed and resumed, Slurm via
submitit against a real single-node cluster, the table's intervals and the plots."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from unifybench.cli import main
from unifybench.registry import EVALUATORS, get_runnable
from unifybench.reproduce.plan import build_plan, is_tiny_preset
from unifybench.tables import load_spec, spec_names


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("name", spec_names())
def test_planner_maps_every_implemented_row(name, tiny):
    plan = build_plan(name, tiny, api_base_url="http://127.0.0.1:9/v1", judge_base_url="http://127.0.0.1:9/v1")
    spec = load_spec(name)
    assert len({r.run for r in plan.runs}) == len(plan.runs)   # one folder per run
    for row in spec.rows:
        if not row.match:
            assert row.id in plan.reported_only
            continue
        runs = plan.runs_of(row.id)
        assert runs or row.id in plan.skipped, row.id
        assert len({r.benchmark for r in runs}) == len(runs)     # one run per (row, benchmark)
        assert [r.run for r in runs] == ([row.id] if len(runs) == 1 else [f"{row.id}@{r.benchmark}" for r in runs])
        for run in runs:
            cls = get_runnable(run.method)
            assert any(m["method"] == run.method for m in row.match)
            assert is_tiny_preset(run.preset) or run.preset == "paper" if tiny else not is_tiny_preset(run.preset)
            cls.build_config(run.preset, run.overrides)   # a registered preset with real settings
            if not tiny:   # the run is the row's own (method, preset) pair
                assert any(m["method"] == run.method and (m.get("preset") or "paper") == run.preset
                           for m in row.match) or run.preset == "paper"
            assert tiny == (run.benchmark == "unifybench-mini")


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("name", spec_names())
def test_every_column_is_produced_by_a_run_of_its_benchmark_or_said_why_not(name, tiny):
    """Each metric column of each planned row: a run of the row on a benchmark the column reads runs its
    evaluator with an accepted preset; else the runnable cannot answer it, or a run says why not."""
    plan = build_plan(name, tiny, api_base_url="http://127.0.0.1:9/v1", judge_base_url="http://127.0.0.1:9/v1")
    spec = load_spec(name)
    for row in spec.rows:
        runs = plan.runs_of(row.id)
        for col in (c for c in spec.columns if c.kind == "metric" and runs):
            reads = col.benchmarks or spec.benchmarks
            producing = [r for r in runs if col.evaluator in r.evaluators
                         and (reads is None or r.benchmark in reads)]
            if producing:
                assert len(producing) == 1, (row.id, col.id)     # one run per column, never two readings
                ran = producing[0].evaluator_presets.get(col.evaluator, "default")
                assert ran in EVALUATORS.get(col.evaluator).presets or ran == "default"
                if col.preset is not None:
                    assert ran in col.preset, (row.id, col.id, ran, col.preset)
                continue
            cls, ev = get_runnable(runs[0].method), EVALUATORS.get(col.evaluator)
            said = any(f"{col.evaluator} [{col.id}]" in r.skipped_evaluators or col.evaluator in r.skipped_evaluators
                       for r in runs)
            cannot = col.source != "forgetting" and (not (ev.tasks & cls.tasks) or col.evaluator in cls.not_scored_by)
            assert said or cannot, (row.id, col.id)
            if tiny and reads is not None and "unifybench-mini" not in reads:
                assert "tiny preset runs only unifybench-mini" in runs[0].skipped_evaluators[f"{col.evaluator} [{col.id}]"]


def test_a_row_reading_two_benchmarks_is_a_run_on_each():
    """UniCTokens Table 2 (left): every row reads Yo'LLaVA and MC-LLaVA; the MC-LLaVA columns are run on the
    mc-llava benchmark with their mc-llava-single presets, not listed as not run."""
    plan = build_plan("unictokens_table2_understanding", tiny=False)
    yollava, mc = plan.run("mc_llava@yollava"), plan.run("mc_llava@mc-llava")
    assert (yollava.benchmark, mc.benchmark) == ("yollava", "mc-llava")
    assert yollava.evaluator_presets == {"recognition": "unictokens", "mc": "unictokens"}
    assert mc.evaluators == ["recognition", "bleu", "mc"]
    assert set(mc.evaluator_presets.values()) == {"mc-llava-single"}
    assert not yollava.skipped_evaluators and not mc.skipped_evaluators
    assert {r.benchmark for r in build_plan("unictokens_table2_generation", tiny=False).runs} == {"dreambench", "yollava"}
    assert [r.run for r in build_plan("unictokens_table1", tiny=False).runs_of("unictokens")] == ["unictokens"]


def test_tiny_ablation_rows_keep_their_ablation():
    plan = build_plan("unictokens_table3_stages", tiny=True)
    assert plan.run("stage1").preset == "tiny" and plan.run("stage1").overrides == {"stages": "1"}
    assert plan.run("stage3").overrides == {}


def test_api_rows_are_skipped_without_a_url():
    plan = build_plan("unictokens_table1", tiny=True)
    assert "api-base-url" in plan.skipped["gpt4o_tp"]
    assert "soft_prompt_300" in build_plan("yochameleon_supp_table1", tiny=True).reported_only
    plan = build_plan("unictokens_table1", tiny=True, api_base_url="http://x/v1")
    assert plan.run("gpt4o_tp").overrides["base_url"] == "http://x/v1"


# ------------------------------------------------------------------------------- a two-row tiny suite

def _two_row_spec(d: Path) -> Path:
    """Random coin flips and tiny Yo'LLaVA on recognition, with made-up 'reported' numbers and a plot."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "rep.json").write_text(json.dumps({
        "format": "unifybench-reported/1", "id": "two", "source": {"paper": "test", "table": "T"},
        "columns": {"rec": "Rec"},
        "rows": [{"id": "coin", "row": "Coin", "values": {"rec": "0.500"}},
                 {"id": "yollava", "row": "Yo'LLaVA", "values": {"rec": "9.000"}}]}))
    spec = d / "two.json"
    spec.write_text(json.dumps({
        "format": "unifybench-spec/1", "name": "two", "title": "Two rows", "reported": "rep.json",
        "benchmarks": ["unifybench-mini"],
        "columns": [{"id": "rec", "label": "Rec", "evaluator": "recognition", "preset": "unictokens"}],
        "rows": [{"id": "coin", "match": [{"method": "random"}]},
                 {"id": "yollava", "match": [{"method": "yollava", "preset": "paper"}]}],
        "plot": {"x": {"coin": 0, "yollava": 1}, "x_label": "row"}}))
    return spec


def _args(spec: Path, suite: Path, cache: Path, *more: str) -> list[str]:
    return ["reproduce", str(spec), "--preset", "tiny", "--suite-dir", str(suite), "--concepts", "cat,dog",
            "--cache-dir", str(cache), *more]


def _values(suite: Path) -> dict:
    out = {}
    for row in ("coin", "yollava"):
        doc = json.loads((suite / "runs" / row / "results.json").read_text())
        out[row] = doc["results"]["unifybench-mini"]["recognition"]["per_concept"]
        preds = sorted((suite / "runs" / row / "concepts").glob("*/predictions.jsonl"))
        out[row + "/predictions"] = [p.read_text() for p in preds]
    return out


@pytest.fixture(scope="module")
def local_suites(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    spec, cache = _two_row_spec(root / "spec"), root / "cache"
    clean = root / "clean"
    assert main(_args(spec, clean, cache)) == 0
    # The same suite, killed while the second row is half done, then resumed by rerunning the command.
    killed = root / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "unifybench.cli", *_args(spec, killed, cache)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    units = killed / "runs" / "yollava" / "concepts"
    deadline = time.time() + 600
    while time.time() < deadline and not list(units.glob("*/unit.json")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the suite finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = subprocess.run([sys.executable, "-m", "unifybench.cli", "reproduce", "--status", str(killed)],
                            capture_output=True, text=True)
    assert main(_args(spec, killed, cache)) == 0
    return clean, killed, status.stdout


@pytest.mark.slow
def test_local_launcher_resumes_to_identical_results(local_suites):
    clean, killed, status = local_suites
    assert re.search(r"coin\s+done", status) and re.search(r"yollava\s+interrupted\s+1", status), status
    assert _values(killed) == _values(clean)


@pytest.mark.slow
def test_outputs_table_intervals_plots_and_page(local_suites):
    from unifybench.stats import bootstrap_ci
    clean, _, _ = local_suites
    md = (clean / "table.md").read_text()
    assert "mean nothing" in md and "mean nothing" in (clean / "table.tex").read_text()
    rows = [l for l in (clean / "table.csv").read_text().splitlines() if l.startswith("reproduced")]
    by_row = {l.split(",")[1]: l.split(",") for l in rows}
    per = json.loads((clean / "runs" / "yollava" / "results.json").read_text())["results"]["unifybench-mini"]["recognition"]["per_concept"]
    ci = bootstrap_ci(per, seed=0)
    fields = by_row["yollava"]
    assert float(fields[10]) == pytest.approx(ci["low"]) and float(fields[11]) == pytest.approx(ci["high"])
    assert fields[12] == "true"      # 9.000 lies outside any interval of a fraction
    assert "◇" in md
    svg = (clean / "plots" / "two.svg").read_text()
    assert (clean / "plots" / "two.png").stat().st_size > 1000
    group = re.search(r'<g id="reproduced-rec">(.*?)</g>\s*</g>', svg, re.S) or re.search(r'<g id="reproduced-rec">(.*?)</g>', svg, re.S)
    assert group and group.group(1).count("<use") == 2     # both reproduced points
    page = (clean / "report.html").read_text()
    assert "mean nothing" in page and 'data-role="plot"' in page and 'data-row="yollava"' in page


# ------------------------------------------------------------------------------------------------- slurm

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from slurm_cluster import SlurmCluster
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    why = cluster.start()
    yield cluster if why is None else why
    if why is None:
        cluster.stop()


@pytest.mark.slow
def test_slurm_launcher_through_submitit(slurm, tmp_path, monkeypatch):
    spec, cache = _two_row_spec(tmp_path / "spec"), tmp_path / "cache"
    suite = tmp_path / "suite"
    if isinstance(slurm, str):
        # Only where Slurm cannot start: the same submitit path on its local executor, said out loud.
        warnings.warn(f"Slurm could not start ({slurm}); testing submitit's LOCAL executor instead")
        from unifybench.reproduce import launch
        monkeypatch.setattr(launch, "slurm_executor",
                            lambda s, st, cluster="slurm", _f=launch.slurm_executor: _f(s, st, "local"))
    else:
        print(f"slurm started in {slurm.start_seconds:.1f} s")
        for k, v in slurm.env().items():
            monkeypatch.setenv(k, v)
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("partition: ci\ntime: 10\ncpus: 1\narray: true\n" if not isinstance(slurm, str) else "time: 10\n")
    t0 = time.perf_counter()
    assert main(_args(spec, suite, cache, "--concepts", "cat", "--launcher", "slurm", "--config", str(cfg), "--wait")) == 0
    print(f"two rows through submitit in {time.perf_counter() - t0:.1f} s")
    from unifybench.reproduce.manifest import row_state
    for row in ("coin", "yollava"):
        state = row_state(suite, row)
        assert state["state"] == "done" and state.get("job_id"), state
    if not isinstance(slurm, str):
        assert re.fullmatch(r"\d+_\d", json.loads((suite / "runs" / "coin" / "state.json").read_text())["job_id"])
    assert (suite / "table.md").is_file()
    # Rerunning submits nothing: every row is done.
    assert main(_args(spec, suite, cache, "--concepts", "cat", "--launcher", "slurm", "--config", str(cfg), "--wait")) == 0


def test_dry_run_states_runs_cost_and_rows_it_cannot_run(tmp_path, capsys):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "calibration.json").write_text(json.dumps({"unictokens": {"seconds_per_concept": 720.0, "device": "cuda"}}))
    assert main(["reproduce", "unictokens_table1", "--preset", "tiny", "--suite-dir", str(suite), "--dry-run",
                 "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("unictokens "))
    assert "recognition,bleu" in line and "1.6 (720.0 s/concept on cuda)" in line   # 720 s x 4 concepts x 2 GPUs
    assert re.search(r"^yollava .*not measured", out, re.M)
    assert "gpt4o_tp: skipped" in out and "mean nothing" in out
    assert not (suite / "manifest.json").exists()   # a dry run writes nothing


# ---------------------------------------------------------------------------------------------- torchrun

@pytest.mark.slow   # ~1 min of CPU: two tiny runs, the second on two processes
def test_torchrun_row_on_two_cpu_ranks_equals_one_process(tmp_path):
    """One row (tiny Yo'LLaVA, recognition, two concepts) handed to torchrun with 2 gloo ranks on this node:
    the same per-concept numbers and predictions as the same row run in this process."""
    spec, cache = _two_row_spec(tmp_path / "spec"), tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    t0 = time.perf_counter()
    assert main(_args(spec, one, cache, "--rows", "yollava")) == 0
    t1 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", *_args(spec, two, cache, "--rows", "yollava",
                                                                        "--torchrun", "2")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"one process {t1 - t0:.1f} s, torchrun 2 ranks {time.perf_counter() - t1:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from unifybench.reproduce.manifest import row_state
    assert row_state(two, "yollava")["state"] == "done"
    doc = json.loads((two / "runs" / "yollava" / "results.json").read_text())
    assert doc["execution"]["world_size"] == 2
    assert {u["world_size"] for u in doc["execution"]["units"].values()} == {2}

    def row_values(suite):
        res = json.loads((suite / "runs" / "yollava" / "results.json").read_text())["results"]["unifybench-mini"]
        preds = {p.parent.name: p.read_text() for p in (suite / "runs" / "yollava" / "concepts").glob("*/predictions.jsonl")}
        return res["recognition"]["per_concept"], res["recognition"]["value"], preds
    assert row_values(two) == row_values(one)
    assert set(row_values(one)[0]) == {"cat", "dog"}


def test_a_row_with_a_run_per_benchmark_fills_each_benchmarks_columns(tmp_path):
    """The table of a suite whose row has two runs: a reproduced line per run, each with its benchmark's
    columns (and their intervals), none of the other's; --data-root wants BENCHMARK=PATH for two benchmarks."""
    from unifybench.reproduce import manifest, results
    plan = build_plan("unictokens_table2_understanding", tiny=False, rows=["mc_llava"])
    suite = tmp_path / "suite"
    manifest.write_manifest(suite, {"format": manifest.FORMAT, "spec": plan.spec.name, "tiny": False,
                                    "options": {}, "runs": [r.to_json() for r in plan.runs],
                                    "reported_only": {}, "skipped": {}})
    per = {"a": 0.25, "b": 0.75}
    for run in plan.runs:
        res = {ev: {"value": 0.5, "n": 4, "n_failed": 0, "per_concept": per,
                    "preset": run.evaluator_presets.get(ev, "default")} for ev in run.evaluators}
        if run.benchmark == "mc-llava":
            res["bleu"]["by_task"] = {"vqa": {"value": 0.5, "n": 2, "n_failed": 0, "per_concept": per}}
            res["mc"]["by_kind"] = {"text": {"value": 0.5, "per_concept": per}}
        doc = {"schema_version": 1, "results": {run.benchmark: res}, "config": {
            "method": {"name": run.method, "preset": run.preset, "config": {}}, "benchmark": run.benchmark,
            "seed": 0, "concepts": ["a", "b"]}}
        folder = suite / "runs" / run.run
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(doc))
        manifest.write_state(suite, run.run, "done")
    table, _, done, intervals = results.build(suite)
    assert set(done) == {"mc_llava@yollava", "mc_llava@mc-llava"}
    lines = {l.run: l for l in table.lines if l.kind == "reproduced"}
    filled = {run: {c for c, cell in l.cells.items() if cell.full is not None} for run, l in lines.items()}
    assert filled["mc_llava@mc-llava"] == {"mcllava_rec_weight", "mcllava_vqa_bleu", "mcllava_qa_acc"}
    assert filled["mc_llava@yollava"] == {"yollava_rec_weight"}   # by_kind absent here: the mc columns stay '-'
    assert ("mc_llava", "mcllava_vqa_bleu") in intervals and ("mc_llava", "yollava_rec_weight") in intervals
    assert main(["reproduce", "unictokens_table2_understanding", "--dry-run", "--data-root", "/x"]) == 2
    assert main(["reproduce", "unictokens_table2_understanding", "--dry-run", "--data-root", "mc-llava=/x",
                 "--data-root", "yollava=/y", "--suite-dir", str(tmp_path / "dry")]) == 0


@pytest.mark.slow   # one tiny Yo'LLaVA row, trained once for two rows
def test_rows_of_one_configuration_train_once(tmp_path):
    """Two rows naming the same runnable and preset (Yo'LLaVA's main row and its hard-negative row): the
    second waits for the first (two workers), reuses its concept units and only scores; same numbers."""
    d = tmp_path / "spec"
    d.mkdir()
    spec = d / "same.json"
    spec.write_text(json.dumps({
        "format": "unifybench-spec/1", "name": "same", "title": "One configuration, two rows",
        "benchmarks": ["unifybench-mini"],
        "columns": [{"id": "rec", "label": "Rec", "evaluator": "recognition", "preset": "unictokens"}],
        "rows": [{"id": "main", "label": "Main", "match": [{"method": "yollava", "preset": "paper"}]},
                 {"id": "again", "label": "Again", "match": [{"method": "yollava", "preset": "paper"}]}]}))
    suite = tmp_path / "suite"
    plan = build_plan(str(spec), tiny=True)
    assert plan.run("again").trains_as == "main" and plan.run("main").trains_as == ""
    assert main(_args(spec, suite, tmp_path / "cache", "--jobs", "2")) == 0
    docs = {r: json.loads((suite / "runs" / r / "results.json").read_text()) for r in ("main", "again")}
    assert docs["again"]["timing"]["concepts_s"] == {}            # no unit fitted or answered again
    assert set(docs["main"]["timing"]["concepts_s"]) == {"cat", "dog"}
    assert not any(u.get("reused") for u in docs["main"]["timing"]["concepts_s"].values())
    rec = {r: d["results"]["unifybench-mini"]["recognition"]["per_concept"] for r, d in docs.items()}
    assert rec["again"] == rec["main"] and set(rec["main"]) == {"cat", "dog"}
    for c in ("cat", "dog"):
        for name in ("predictions.jsonl", "unit.json"):
            assert ((suite / "runs" / "again" / "concepts" / c / name).read_text()
                    == (suite / "runs" / "main" / "concepts" / c / name).read_text())


@pytest.mark.parametrize("tiny", [False, True])
def test_yollava_main_and_hard_negative_rows_share_one_training(tiny):
    plan = build_plan("yollava_results", tiny)
    assert plan.run("hard_negatives").trains_as == "yollava"
    assert plan.run("no_hard_negatives").trains_as == "" and plan.run("yollava").trains_as == ""
    assert not any(r.trains_as for r in build_plan("unictokens_table1", tiny).runs)   # every row its own
