"""`unifybench eval` on predictions made elsewhere: {item_id, answer} lines and an image manifest."""
import json
import os

import pytest
from PIL import Image

from judge_server import FakeJudge
from unifybench.cli import main
from unifybench.data.unifybench import UnifyBenchMini

KEY = "sk-test-do-not-leak-4242"


@pytest.fixture()
def predictions(tmp_path):
    bench = UnifyBenchMini()
    answers, manifest = [], []
    expected_rec = {}
    (tmp_path / "gen").mkdir()
    for concept in bench.concepts():
        pos = neg = 0
        for item in bench.items(concept):
            if item.task == "rec":
                # Right on every positive, and on every second negative, per concept.
                n = sum(1 for a in answers if a["item_id"].startswith(f"unifybench-mini/{concept.name}/rec/"))
                right = item.label or n % 2 == 0
                reply = ("Yes, it is." if item.label else "No.") if right else ("No." if item.label else "Yes.")
                answers.append({"item_id": item.id, "answer": reply})
                pos += item.label
                neg += (not item.label) and right
            elif item.task in ("vqa", "text_qa"):
                answers.append({"item_id": item.id, "answer": item.answer})  # exact references
            elif item.task == "knowledge_gen":
                path = tmp_path / "gen" / f"{concept.name}_{item.id.rsplit('/', 1)[1]}.png"
                Image.new("RGB", (32, 32), (255, 0, 0)).save(path)   # the fake judge scores red as 1
                manifest.append({"item_id": item.id, "path": os.path.relpath(path, tmp_path)})
        n_neg = sum(1 for i in bench.items(concept) if i.task == "rec" and not i.label)
        expected_rec[concept.name] = (1.0 + neg / n_neg) / 2
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    (tmp_path / "images.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    return tmp_path, expected_rec


def test_eval_scores_every_metric_from_files(predictions, tmp_path, monkeypatch, capsys):
    folder, expected_rec = predictions
    monkeypatch.setenv("UNIFYBENCH_JUDGE_API_KEY", KEY)
    out = tmp_path / "out"
    with FakeJudge(expected_key=KEY, seed=0) as judge:
        code = main(["eval", "--benchmark", "unifybench-mini", "--predictions", str(folder / "answers.jsonl"),
                     "--predictions", str(folder / "images.jsonl"), "--evaluators",
                     "recognition,bleu,judge_qa,t2i_score", "--judge-base-url", judge.base_url,
                     "--judge-model", "fake-judge", "--output-dir", str(out), "--cache-dir", str(tmp_path / "c"),
                     "--no-progress"])
        assert code == 0, capsys.readouterr().err
        assert not judge.violations
    doc = json.loads((out / "results.json").read_text())
    res = doc["results"]["unifybench-mini"]
    for name in ("recognition", "bleu", "judge_qa", "t2i_score"):
        assert {"value", "n", "n_failed", "per_concept", "preset"} <= set(res[name]), name
    rec = res["recognition"]
    assert rec["n_unparsed"] == 0 and rec["n"] == 64
    for concept, value in expected_rec.items():
        assert rec["per_concept"][concept] == pytest.approx(value)
    assert res["bleu"]["value"] == pytest.approx(1.0)          # answers equal to the references
    assert res["judge_qa"]["value"] == pytest.approx(1.0) and res["judge_qa"]["n_failed"] == 0
    assert res["t2i_score"]["value"] == pytest.approx(1.0) and res["t2i_score"]["n"] == 8
    assert res["bleu"]["n_missing"] == 0 and res["t2i_score"]["n_missing"] == 0
    for f in [*out.rglob("*"), *(tmp_path / "c").rglob("*")]:
        if f.is_file():
            assert KEY not in f.read_text(errors="ignore"), f


def test_eval_counts_missing_items_and_rejects_unknown_ids(predictions, tmp_path, capsys):
    folder, _ = predictions
    lines = (folder / "answers.jsonl").read_text().splitlines()
    (folder / "half.jsonl").write_text("\n".join(lines[::2]) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(folder / "half.jsonl"), "--evaluators", "recognition",
                 "--output-dir", str(out), "--no-progress"]) == 0
    rec = json.loads((out / "results.json").read_text())["results"]["unifybench-mini"]["recognition"]
    assert rec["n"] == 64 and rec["n_missing"] > 0 and rec["missing"] == "wrong"   # a missing answer is wrong
    assert main(["eval", "--predictions", str(folder / "half.jsonl"), "--evaluators", "recognition",
                 "--output-dir", str(out), "--no-progress", "--missing", "exclude"]) == 0
    old = json.loads((out / "results.json").read_text())["results"]["unifybench-mini"]["recognition"]
    assert old["n"] + old["n_missing"] == 64 and old["n_missing"] == rec["n_missing"]
    (folder / "bad.jsonl").write_text(json.dumps({"item_id": "unifybench-mini/dog/rec/nope", "answer": "Yes"}) + "\n")
    assert main(["eval", "--predictions", str(folder / "bad.jsonl"), "--output-dir", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "item_id" in err
