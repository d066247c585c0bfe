"""Issue 15 item 1: every weight, data folder and service a run needs is located before the first fit; all
missing ones are named in one line (exit 2, no traceback); `run --check` prints the plan and writes nothing."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import unifybench
from unifybench.cli import main
from unifybench.errors import UserError


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_data_env(monkeypatch):
    for var in ("UNIFYBENCH_MMLU_ROOT", "UNIFYBENCH_POPE_ROOT", "UNIFYBENCH_MMBENCH_ROOT", "UNIFYBENCH_JUDGE_API_KEY",
                "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def chameleon_folder(tmp_path) -> Path:
    # The check locates folders; it loads nothing, so the folder's content is never read here.
    folder = tmp_path / "anole"
    folder.mkdir()
    return folder


def test_paper_run_without_clip_fails_before_any_fit_with_one_line(tmp_path, capsys, chameleon_folder,
                                                                     no_data_env):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--method", "yochameleon", "--model", f"chameleon={chameleon_folder}", "--output-dir", str(out),
            "--cache-dir", str(cache), "--no-progress"]
    t0 = time.perf_counter()
    rc = main(argv)
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2
    assert elapsed < 10, elapsed
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("unifybench: error: ") and "Traceback" not in err
    line = lines[0]
    # Each missing piece, who needs it and the flag that supplies it.
    assert "[method yochameleon (retrieval CLIP): clip weights]" in line
    assert "--set retrieval_clip=PATH" in line
    for ev in ("clip_i", "clip_t"):
        assert f"[evaluator {ev}: clip weights]" in line
    assert "[evaluator dino: dino weights]" in line and "--model dino=PATH" in line
    assert line.count("--model clip=PATH") >= 3
    assert "chameleon" not in line.split("error: ")[1].split("[")[0]   # the given backbone is not reported
    assert not out.exists()                       # no concept folder, no train_log, no lock
    assert not cache.exists()                     # nothing built either


def test_check_on_the_tiny_default_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc = main(["run", "--method", "yochameleon", "--preset", "tiny", "--check", "--output-dir", str(out),
               "--cache-dir", str(cache)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "method      yochameleon (preset tiny)" in text
    assert "benchmark   unifybench-mini: 4 concepts (dog, cat, backpack, bear_plushie)" in text
    assert "stages      setup, fit + predict x 4 concepts, scoring" in text
    assert "clip_i (default)" in text and "recognition (default)" in text
    assert "ok       method yochameleon: chameleon weights: tiny" in text
    assert "ok       method yochameleon (retrieval CLIP): clip weights: tiny" in text
    assert "ok       evaluator dino: dino weights: tiny" in text
    assert f"output      {out} (will be created)" in text
    assert "ready: everything is present" in text and "MISSING" not in text
    assert not out.exists() and not cache.exists()


def test_check_with_missing_pieces_lists_all_and_leaves_the_folder_byte_identical(tmp_path, capsys,
                                                                                  chameleon_folder, no_data_env):
    out = tmp_path / "out"
    (out / "concepts" / "dog").mkdir(parents=True)
    (out / "concepts" / "dog" / "unit.json").write_text('{"key": "old"}\n')
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    rc = main(["run", "--dry-run", "--method", "yochameleon", "--model", f"chameleon={chameleon_folder}",
               "--evaluators", "recognition,clip_i,dino,mmlu,judge_qa", "--output-dir", str(out),
               "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert rc == 2
    missing = [line for line in text.splitlines() if line.startswith("  MISSING")]
    assert len(missing) == 5, text
    assert any("retrieval CLIP" in m and "--model clip=PATH" in m for m in missing)
    assert any("evaluator clip_i" in m and "--model clip=PATH" in m for m in missing)
    assert any("evaluator dino" in m and "--model dino=PATH" in m for m in missing)
    assert any("evaluator mmlu: data" in m and "UNIFYBENCH_MMLU_ROOT" in m for m in missing)
    assert any("evaluator judge_qa: service" in m and "--judge-base-url" in m for m in missing)
    assert f"ok       method yochameleon: chameleon weights: {chameleon_folder}" in text
    assert "stages      setup, fit + predict x 4 concepts, scoring, forgetting" in text
    assert f"output      {out} (exists)" in text
    assert "NOT ready: 5 missing" in text
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["concepts", "notes.txt"]


def test_a_missing_benchmark_folder_is_listed_with_the_rest(tmp_path, capsys, monkeypatch, no_data_env):
    monkeypatch.delenv("UNIFYBENCH_UNIFYBENCH_ROOT", raising=False)
    rc = main(["run", "--check", "--method", "yochameleon", "--benchmark", "unifybench", "--evaluators",
               "recognition,clip_i", "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    text = capsys.readouterr().out
    assert rc == 2
    missing = [line for line in text.splitlines() if line.startswith("  MISSING")]
    assert any("benchmark unifybench: data" in m and "--data-root" in m for m in missing), text
    assert any("evaluator clip_i" in m for m in missing)
    assert any("method yochameleon: chameleon weights" in m for m in missing)   # Anole is not in the HF cache


def test_judge_given_is_found_and_its_key_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNIFYBENCH_JUDGE_API_KEY", "sk-secret-123")
    rc = main(["run", "--check", "--method", "random", "--evaluators", "recognition,judge_qa",
               "--judge-base-url", "http://user:pw@localhost:9/v1?token=x", "--judge-model", "j",
               "--output-dir", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "ok       evaluator judge_qa: service: judge j at http://localhost:9/v1, key from " \
           "$UNIFYBENCH_JUDGE_API_KEY" in text
    assert "sk-secret" not in text and "pw@" not in text and "token=x" not in text


def test_the_python_api_checks_as_early(tmp_path, chameleon_folder, no_data_env):
    out = tmp_path / "out"
    plan = unifybench.check("yochameleon", model={"chameleon": str(chameleon_folder)}, evaluators="recognition,dino",
                            output_dir=out)
    assert not plan.ready and [what for what, _ in plan.missing] == [
        "method yochameleon (retrieval CLIP): clip weights", "evaluator dino: dino weights"]
    assert "NOT ready: 2 missing" in plan.text()
    with pytest.raises(UserError, match=r"^2 things this run needs are missing .*retrieval CLIP.*evaluator dino"):
        unifybench.run("yochameleon", model={"chameleon": str(chameleon_folder)}, evaluators="recognition,dino",
                       output_dir=out)
    assert not out.exists()
    ready = unifybench.check("yochameleon", preset="tiny", evaluators="recognition", output_dir=out)
    assert ready.ready and ready.missing == []


def test_eval_names_every_missing_evaluator_weight_in_one_line(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"item_id": "dog/gen/000", "path": "x.png"}\n')
    from unifybench.runspec import make_benchmark
    bench = make_benchmark("unifybench-mini", None)
    gen = next(i for c in bench.concepts() for i in bench.items(c) if i.task == "gen")
    preds.write_text(f'{{"item_id": "{gen.id}", "path": "x.png"}}\n')
    rc = main(["eval", "--predictions", str(preds), "--evaluators", "clip_i,dino", "--output-dir",
               str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "[evaluator clip_i: clip weights]" in err and "[evaluator dino: dino weights]" in err
    assert not (tmp_path / "out").exists()


RUNNABLE_WITH_WEIGHTS = ["chameleon-full-ft", "mc-llava", "unictokens", "yochameleon", "yollava", "chameleon-ip",
                         "chameleon-original", "chameleon-tp", "dreambooth-sd", "llava-tp", "qwen25vl-tp", "rap-llava",
                         "showo-tp", "textual-inversion", "real-images", "random"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNNABLE_WITH_WEIGHTS)
def test_declared_needs_are_what_setup_loads(name, monkeypatch):
    """One fact in one place: the roles a method declares are exactly the roles its `setup` resolves (the
    check could otherwise pass a run that then fails loading)."""
    from unifybench.methods.base import RunContext
    from unifybench.models import weights
    from unifybench.registry import get_runnable
    cls = get_runnable(name)
    method = cls(RunContext(tiny=True), "tiny" if "tiny" in cls.presets else None)
    declared = {n.role for n in method.needs(None) if n.kind == "weights"}
    declared.discard("face")   # UniCTokens' stage-2 face init loads at fit time, for person concepts only
    resolved = set()
    real = weights.resolve

    def recording(role, *args, **kwargs):
        resolved.add(role)
        return real(role, *args, **kwargs)
    monkeypatch.setattr(weights, "resolve", recording)
    method.setup()
    assert resolved == declared


def test_api_baselines_declare_their_server(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("UNIFYBENCH_API_BASE_URL", raising=False)
    rc = main(["run", "--check", "--method", "gpt4o-tp", "--evaluators", "recognition", "--output-dir",
               str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert rc == 2 and "MISSING  method gpt4o-tp: service" in text and "--set base_url=URL" in text
    rc = main(["run", "--check", "--method", "gpt4o-tp", "--evaluators", "recognition", "--set",
               "base_url=http://localhost:9/v1", "--output-dir", str(tmp_path / "out")])
    assert rc == 0 and "ok       method gpt4o-tp: service: http://localhost:9/v1" in capsys.readouterr().out
