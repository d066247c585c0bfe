"""POPE: the original parser on tricky replies, metrics against sklearn, data pairing, and a scripted model."""
import random

import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from unifybench.errors import DataError, UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting import pope as pope_mod
from unifybench.evaluators.forgetting.pope import POPE, parse_yes_no, pope_metrics

from forgetting_fixture import write_pope  # noqa: E402


@pytest.mark.parametrize("reply, expected", [
    ("Yes", "yes"),
    ("No", "no"),
    ("No.", "no"),
    ("no", "no"),
    ("Yes, there is a dog in the image.", "yes"),
    ("No, there is no dog.", "no"),
    ("There is not a car in the image", "no"),
    ("Yes. There is no spoon, it is not there.", "yes"),   # only the first sentence counts
    ("There is a dog. No other animal.", "yes"),
    ("no, the image shows a cat", "no"),                   # comma removed: "no" is a word
    ("I do not think so", "no"),
    ("Nope", "yes"),                                        # not a no-word
    ("NO", "yes"),                                          # the original is case-sensitive
    ("Not really", "yes"),                                  # "Not" is not in the list
    ("no\n", "yes"),                                        # splits on single spaces only
    ("", "yes"),                                            # an empty reply reads as yes
    ("The answer is no", "no"),
    ("cannot", "yes"),
])
def test_original_parser(reply, expected):
    assert parse_yes_no(reply, "original") == expected


@pytest.mark.parametrize("reply, expected", [("NO", "no"), ("Not really", "no"), ("no\n", "no"), ("", None),
                                             ("Yes. No.", "yes"), ("Nope", "yes")])
def test_lenient_parser(reply, expected):
    assert parse_yes_no(reply, "lenient") == expected


def _sk(labels, preds):
    return {"accuracy": accuracy_score(labels, preds),
            "precision": precision_score(labels, preds, pos_label="yes", zero_division=0),
            "recall": recall_score(labels, preds, pos_label="yes", zero_division=0),
            "f1": f1_score(labels, preds, pos_label="yes", zero_division=0),
            "yes_ratio": sum(p == "yes" for p in preds) / len(preds)}


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_sklearn(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    labels = [rng.choice(["yes", "no"]) for _ in range(n)]
    bias = rng.random()
    preds = [("yes" if rng.random() < bias else "no") for _ in range(n)]
    labels[0], preds[0], labels[1], preds[1] = "yes", "yes", "no", "yes"   # tp >= 1, fp >= 1: all defined
    ours, ref = pope_metrics(labels, preds), _sk(labels, preds)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    assert ours["tp"] + ours["fp"] + ours["tn"] + ours["fn"] == n


def test_yes_ratio_is_from_predictions_and_undefined_is_none():
    m = pope_metrics(["yes", "yes", "no", "no"], ["no", "no", "no", "no"])
    assert m["yes_ratio"] == 0.0 and m["accuracy"] == 0.5   # labels are half yes; predictions none
    assert m["precision"] is None and m["f1"] is None and m["recall"] == 0.0


def _scripted(monkeypatch, replies):
    calls = []

    def fake(backbone, prefix_ids, parts, max_new_tokens, skip=None):
        image, text = parts
        calls.append((prefix_ids, text))
        obj = text.split("Is there a ")[1].split(" in")[0]
        return replies[obj]
    monkeypatch.setattr(pope_mod, "answer_text", fake)
    return calls


def test_end_to_end_per_split_and_pooled(tmp_path, monkeypatch):
    root = write_pope(tmp_path / "pope")
    replies = {"dog": "Yes, there is.", "car": "Yes", "cat": "No, I do not see one.", "person": "No.",
               "bowl": "There is a bowl.", "spoon": "There is not a spoon."}
    calls = _scripted(monkeypatch, replies)
    ev = POPE(data=str(root))
    res = ev.evaluate_model(object(), [7, 8], EvalContext(run_dir=tmp_path))
    assert all(p == [7, 8] for p, _ in calls) and all(t.startswith("\nIs there") for _, t in calls)
    labels = {"dog": "yes", "car": "no", "cat": "yes", "person": "no", "bowl": "yes", "spoon": "no"}
    split = {"random": ["dog", "car"], "popular": ["cat", "person"], "adversarial": ["bowl", "spoon"]}
    preds = {o: parse_yes_no(r) for o, r in replies.items()}
    for cat, objs in split.items():
        ref = _sk([labels[o] for o in objs], [preds[o] for o in objs])
        for k, v in ref.items():
            got = res["per_split"][cat][k]
            assert (got if got is not None else 0) == pytest.approx(v), (cat, k)
    every = list(labels)
    ref = _sk([labels[o] for o in every], [preds[o] for o in every])
    for k, v in ref.items():
        assert res["pooled"][k] == pytest.approx(v), k
    assert res["value"] == pytest.approx(ref["f1"]) and res["n"] == 6 and res["n_failed"] == 0
    assert res["mean_over_splits"]["accuracy"] == pytest.approx(
        sum(res["per_split"][c]["accuracy"] for c in split) / 3)
    assert len(res["samples"]) == 6 and {s["category"] for s in res["samples"]} == set(split)
    table = ev.report_metrics(res)
    assert table["f1 pooled"] == res["value"] and table["f1 random"] == res["per_split"]["random"]["f1"]


def test_unreadable_image_is_counted_not_scored(tmp_path, monkeypatch):
    root = write_pope(tmp_path / "pope")
    (root / "val2014" / sorted(p.name for p in (root / "val2014").iterdir())[0]).write_bytes(b"not an image")
    _scripted(monkeypatch, {o: "Yes" for o in ("dog", "car", "cat", "person", "bowl", "spoon")})
    res = POPE(data=str(root)).evaluate_model(object(), None, EvalContext(run_dir=tmp_path))
    assert res["n_failed"] == 1 and res["n"] == 5 and res["pooled"]["n"] == 5


def test_label_files_out_of_order_are_a_data_error(tmp_path):
    root = write_pope(tmp_path / "pope", shuffle_labels=True)
    with pytest.raises(DataError, match="not in the same order"):
        POPE(data=str(root)).items()


def test_missing_data_is_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIFYBENCH_POPE_ROOT", raising=False)
    with pytest.raises(UserError, match="UNIFYBENCH_POPE_ROOT"):
        POPE().items()
    monkeypatch.setenv("UNIFYBENCH_POPE_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="does not exist"):
        POPE().items()
    root = write_pope(tmp_path / "pope")
    monkeypatch.setenv("UNIFYBENCH_POPE_ROOT", str(root))
    assert len(POPE(categories="random").items()) == 2
