"""The everyday interface (issue 16): `unifybench.run/evaluate`, `--config FILE.yaml`, `--limit N`, the
training log and the plain progress lines, on a user's own Method subclass (no model: fast)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import unifybench
from unifybench.cli import main as cli_main
from unifybench.data.schema import GEN, REC, TEXT_QA, VQA, Prediction
from unifybench.methods.base import Method


class SaysYes(Method):
    """A method under development, not registered: answers "Yes" and logs a made-up loss while fitting."""
    name = "says-yes"
    tasks = frozenset({REC, VQA, TEXT_QA})

    def fit(self, concept, benchmark, out_dir):
        from unifybench import trainlog
        for epoch in range(2):
            for step in range(3):
                trainlog.step(1.0 / (1 + 3 * epoch + step), "fit")
            trainlog.epoch(0.5 / (1 + epoch), "fit")
        return None

    def predict(self, concept, items, out_dir):
        return [Prediction(i.id, i.concept, i.task, i.prompt, text="Yes") for i in items]


def recognition_by_hand(concepts: list[str], limit: int = 0) -> float:
    """The strict parser reads "Yes" as yes: positive recall 1, negative recall 0; a concept's value is the
    mean of the recalls its items have (both: 0.5), the run's the mean over concepts."""
    from unifybench.runspec import make_benchmark
    bench = make_benchmark("unifybench-mini", None)
    values = []
    for c in concepts:
        rec = [i for i in bench.items(bench.concept(c)) if i.task == REC]
        rec = rec[:limit] if limit else rec
        recalls = ([1.0] if any(i.label for i in rec) else []) + ([0.0] if any(not i.label for i in rec) else [])
        values.append(sum(recalls) / len(recalls))
    return sum(values) / len(values)


def test_api_runs_a_users_own_method_class_and_an_instance(tmp_path):
    res = unifybench.run(method=SaysYes, evaluators=["recognition"], concepts="dog,cat", output_dir=tmp_path / "a",
                         cache_dir=tmp_path / "cache", no_progress=True)
    assert isinstance(res, unifybench.api.Results) and res.output_dir == tmp_path / "a"
    assert res.value("recognition") == pytest.approx(recognition_by_hand(["cat", "dog"]))
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    assert doc == res.doc and doc["run_config"]["method"]["name"] == "says-yes"
    assert doc["tiny"] is False and "partial" not in doc
    # the training log: every step and every epoch, in order
    log = [json.loads(l) for l in (tmp_path / "a" / "concepts" / "dog" / "train_log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in log] == ["step"] * 3 + ["epoch"] + ["step"] * 3 + ["epoch"]
    assert [r["loss"] for r in log if r["kind"] == "epoch"] == [0.5, 0.25] and log[-2]["step"] == 6
    assert set(doc["timing"]["concepts_s"]) == {"dog", "cat"} and "setup" in doc["timing"]["stages_s"]
    assert doc["timing"]["total_s"] >= sum(doc["timing"]["stages_s"].values()) - 1e-3
    # an instance (built by the user with their own context) gives the same numbers
    from unifybench.methods.base import RunContext
    inst = SaysYes(RunContext(cache_dir=tmp_path / "cache"))
    res2 = unifybench.run(method=inst, evaluators="recognition", concepts=["dog", "cat"],
                          output_dir=tmp_path / "b", cache_dir=tmp_path / "cache", no_progress=True)
    assert res2.doc["results"] == res.doc["results"]


def test_api_checks_like_the_cli(tmp_path):
    from unifybench.errors import UserError
    with pytest.raises(UserError, match="no_such_option"):
        unifybench.run(method="random", no_such_option=1)
    with pytest.raises(UserError, match="dtype"):
        unifybench.run(method="random", dtype="int3")
    with pytest.raises(UserError):
        unifybench.run(method="nosuchmethod", output_dir=tmp_path)
    with pytest.raises(UserError, match="limit"):
        unifybench.run(method="random", limit=-1)


def test_the_tiny_flag_is_derived_in_one_place():
    from unifybench.options import build_spec
    from unifybench.runspec import RunSpec
    assert RunSpec(method="yochameleon", preset="tiny").tiny is True       # the guessable call of the issue
    assert RunSpec(method="yochameleon").tiny is False
    assert build_spec("run", {"method": "yochameleon", "preset": "tiny"}).tiny is True
    assert build_spec("run", {"method": "yochameleon"}).output_dir == Path("runs/yochameleon-unifybench-mini-paper")


def test_limit_marks_the_run_partial_in_results_table_report_and_paper_tables(tmp_path, capsys):
    res = unifybench.run(method=SaysYes, evaluators="recognition,bleu", concepts="dog", limit=2,
                         output_dir=tmp_path / "run", cache_dir=tmp_path / "cache", no_progress=True)
    doc = res.doc
    assert doc["partial"]["limit"] == 2 and doc["config"]["limit"] == 2 and res.partial
    rec = doc["results"]["unifybench-mini"]["recognition"]
    assert rec["n"] == 2 and rec["n_missing"] == 0                        # left-out items are not "missing"
    assert rec["value"] == pytest.approx(recognition_by_hand(["dog"], limit=2))
    bleu = doc["results"]["unifybench-mini"]["bleu"]
    assert bleu["n"] == 4                                                 # 2 vqa + 2 text_qa
    preds = (tmp_path / "run" / "concepts" / "dog" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 6                                               # 2 per task, 3 tasks
    assert "PARTIAL RUN" in (tmp_path / "run" / "leaderboard.md").read_text()
    assert cli_main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html")]) == 0
    assert 'id="partial-notice"' in (tmp_path / "r.html").read_text()
    # a paper table marks the line partial and does not rank it
    from unifybench import tables
    from unifybench.resultsfile import load_results
    rf = load_results(tmp_path / "run")
    line = tables.Line("reproduced", "r", "mine", "", {}, run=rf.label, partial=rf.partial)
    assert tables._label(line).endswith(tables.PARTIAL_MARK)
    spec = tables.load_spec("unictokens_table1")
    text = tables.render(tables.build_table(spec, [rf], ), "md") if tables.match_row(spec, rf) else ""
    assert not text or tables.PARTIAL_MARK in text


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_file_gives_the_flags_and_flags_override_it(tmp_path, capsys):
    run_a = tmp_path / "a"
    assert cli_main(["run", "--method", "random", "--preset", "tiny", "--concepts", "dog", "--seed", "3",
                     "--evaluators", "recognition,bleu", "--output-dir", str(run_a),
                     "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    cfg = write_yaml(tmp_path / "c.yaml", f"""
method: random
preset: tiny
concepts: [dog]
seed: 7                 # overridden on the command line below
evaluators: [recognition, bleu]
output-dir: {tmp_path / 'b'}
cache_dir: {tmp_path / 'cache'}
no_progress: true
""")
    assert cli_main(["run", "--config", str(cfg), "--seed", "3"]) == 0
    a = json.loads((run_a / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["results"] == b["results"] and a["config"] == b["config"]
    for f in (run_a / "samples").glob("*.jsonl"):
        assert f.read_bytes() == (tmp_path / "b" / "samples" / f.name).read_bytes()
    ra, rb = dict(a["run_config"]), dict(b["run_config"])
    assert ra.pop("output_dir") != rb.pop("output_dir") and ra == rb and rb["seed"] == 3
    capsys.readouterr()
    # unknown keys and bad files are one line, exit 2
    assert cli_main(["run", "--config", str(write_yaml(tmp_path / "bad.yaml", "method: random\nepoch: 3\n"))]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err
    assert cli_main(["run", "--config", str(write_yaml(tmp_path / "bad2.yaml", "- a\n- b\n"))]) == 2
    assert cli_main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert cli_main(["run", "--config", str(write_yaml(tmp_path / "bad3.yaml", "method: [\n"))]) == 2
    assert cli_main(["run", "--preset", "tiny"]) == 2                   # no method anywhere


def test_example_configs_are_valid():
    from unifybench.options import load_config_file, normalise
    folder = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for f in files:
        command = "eval" if "eval" in f.name else "run"
        normalise(command, load_config_file(f, command))


def test_non_terminal_run_prints_one_line_per_stage_and_concept(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", "random", "--preset", "tiny",
                           "--evaluators", "recognition", "--output-dir", str(tmp_path / "r"),
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("unifybench: random:")]
    from unifybench.data.unifybench import UnifyBenchMini
    n = len(UnifyBenchMini().concepts())
    concepts = [l for l in lines if " concept " in l]
    assert len(concepts) == n and all("elapsed" in l and "ETA" in l for l in concepts)
    assert f"concept {n}/{n}" in concepts[-1]
    assert any("setup done in" in l for l in lines) and any("scoring done in" in l for l in lines)
    assert "tiny preset: random tiny models" in proc.stderr and "numbers mean nothing" in proc.stderr
    # the table is Markdown on stdout, one table row per line however long; messages stay on stderr
    out = proc.stdout.splitlines()
    rows = [l for l in out if l.startswith("|")]
    assert rows and all(l.endswith("|") for l in rows) and "wrote" not in proc.stdout and "wrote" in proc.stderr


def test_log_tensorboard_writes_the_losses_of_train_log(tmp_path):
    """`--log tensorboard` (the optional extra): the event files hold the same step and epoch losses as
    train_log.jsonl, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    unifybench.run(method=SaysYes, evaluators="recognition", concepts="dog", log=["tensorboard"],
                   output_dir=tmp_path / "r", cache_dir=tmp_path / "cache", no_progress=True)
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard" / "dog"))
    acc.Reload()
    log = [json.loads(l) for l in (tmp_path / "r" / "concepts" / "dog" / "train_log.jsonl").read_text().splitlines()]
    steps = [(e.step, e.value) for e in acc.Scalars("loss/step/fit")]
    assert steps == [(r["step"], pytest.approx(r["loss"])) for r in log if r["kind"] == "step"]
    epochs = [(e.step, e.value) for e in acc.Scalars("loss/epoch/fit")]
    assert epochs == [(r["epoch"], pytest.approx(r["loss"])) for r in log if r["kind"] == "epoch"]


@pytest.mark.slow   # wandb starts its own service process (about 8 s)
def test_log_wandb_writes_the_losses_of_train_log_to_an_offline_run(tmp_path, monkeypatch):
    """`--log wandb` (the optional extra, in the test extra): offline unless the user set WANDB_MODE, the run
    under the output folder, its history rows holding the step and epoch losses of train_log.jsonl, read back
    from the run file with wandb's own record classes."""
    from wandb_offline import history
    monkeypatch.setenv("WANDB_MODE", "unset-by-the-test")
    monkeypatch.delenv("WANDB_MODE")                           # the default: TrainLog chooses offline
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    unifybench.run(method=SaysYes, evaluators="recognition", concepts="dog", log=["wandb"],
                   output_dir=tmp_path / "r", cache_dir=tmp_path / "cache", no_progress=True)
    import os
    assert os.environ["WANDB_MODE"] == "offline"
    rows = history(tmp_path / "r")
    log = [json.loads(l) for l in (tmp_path / "r" / "concepts" / "dog" / "train_log.jsonl").read_text().splitlines()]
    steps = [(r["_step"], r["loss/step"]) for r in rows if "loss/step" in r]
    assert steps == [(r["step"], pytest.approx(r["loss"])) for r in log if r["kind"] == "step"] and len(steps) == 6
    epochs = [(r["_step"], r["loss/epoch"]) for r in rows if "loss/epoch" in r]
    assert epochs == [(r["step"], pytest.approx(r["loss"])) for r in log if r["kind"] == "epoch"] and len(epochs) == 2
