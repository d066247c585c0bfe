"""Issue 15.7: `eval` with most items missing says so on the console and in the table; an evaluator that
scored nothing makes the command exit non-zero."""
import json

from unifybench.cli import main
from unifybench.data.unifybench import UnifyBenchMini

BENCH = UnifyBenchMini()
ITEMS = [i for c in BENCH.concepts() for i in BENCH.items(c)]


def test_missing_items_are_reported_and_zero_scored_fails(tmp_path, capsys):
    rec = [i for i in ITEMS if i.task == "rec"]
    vqa = next(i for i in ITEMS if i.task == "vqa")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"item_id": rec[0].id, "answer": "Yes."}) + "\n"
                     + json.dumps({"item_id": vqa.id, "answer": vqa.answer}) + "\n")
    out = tmp_path / "out"
    rc = main(["eval", "--predictions", str(preds), "--evaluators", "recognition,bleu", "--output-dir", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"recognition: {len(rec) - 1} items have no prediction" in err
    assert "bleu: " in err and "items have no prediction" in err
    table = (out / "leaderboard.md").read_text()
    assert f"| n_missing | {len(rec) - 1} |" in table

    only_vqa = tmp_path / "q.jsonl"
    only_vqa.write_text(json.dumps({"item_id": vqa.id, "answer": vqa.answer}) + "\n")
    rc = main(["eval", "--predictions", str(only_vqa), "--evaluators", "recognition", "--output-dir",
               str(tmp_path / "out2"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "recognition scored 0 items" in err
