"""The mc-llava loader on a fixture in the exact MC-LLaVA format: concepts and scenarios, stable item ids,
single- and multi-concept items with their reference type tags, labels from position.json, and every
malformed file named (file and field), case by case; the CLI's validate/items."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from unifybench.data.mc_llava import MCLLaVA, split_options
from unifybench.data.schema import CAPTION, MC, PLACEHOLDER, REC, VQA
from unifybench.errors import DataError

from mc_llava_fixture import write_json, write_mc_llava  # noqa: E402

K2, K3 = "two_concept", "three_concept"
A_TEST = f"{K2}/concept/test/Alex"
M3 = f"{K3}/multi/Ann_Ben_Yuki"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mc_llava(tmp_path_factory.mktemp("mcllava"))


@pytest.fixture
def fresh(tmp_path):
    return write_mc_llava(tmp_path / "mc")


def edit(root: Path, name: str, change) -> None:
    path = root / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    write_json(path, data)


def test_concepts_scenarios_and_masks(root):
    b = MCLLaVA(root)
    assert [c.name for c in b.concepts()] == ["Alex", "Yu", "Ann", "Ben", "Yuki"]   # scenarios.json order
    yu = b.concept("Yu")
    assert [c.name for c in b.joint_concepts(yu)] == ["Alex", "Yu"]             # exact split, not substring
    assert [c.name for c in b.joint_concepts(b.concept("Yuki"))] == ["Ann", "Ben", "Yuki"]
    assert [p.name for p in yu.train_images] == ["0.png", "1.png", "2.png"]     # masks are not training images
    masks = b.train_masks(yu)
    assert {p.name: m.name for p, m in masks.items()} == {"0.png": "0_mask.png", "1.png": "1_mask.png",
                                                         "2.png": "2_mask.png"}
    assert len(b.random_images()) == 3
    conv = b.train_conversations(yu)
    assert conv[0] == (f"Who is {PLACEHOLDER}?", f"{PLACEHOLDER} is a character in the film.")  # <image> stripped
    assert b.validate() == []


def test_items_single_and_multi(root):
    b = MCLLaVA(root)
    ann = b.items(b.concept("Ann"))
    ids = [i.id for i in ann]
    assert len(ids) == len(set(ids)) and ids == [i.id for i in MCLLaVA(root).items(b.concept("Ann"))]
    rec = {i.id.split("/rec/")[1]: i for i in ann if i.task == REC}
    assert rec[f"single/{K3}/concept/test/Ann/0.png"].label is True
    assert rec[f"single/{K3}/concept/test/Ben/0.png"].label is False
    assert rec[f"multi/{M3}/1.png"].label is True                 # Ann is in multi image 1
    ben_rec = {i.id.split("/rec/")[1]: i for i in b.items(b.concept("Ben")) if i.task == REC}
    assert ben_rec[f"multi/{M3}/1.png"].label is False            # null in position.json: absent
    assert ben_rec[f"multi/{M3}/0.png"].label is True
    assert rec[f"multi-all/{M3}/0.png"].label is True and rec[f"multi-all/{M3}/1.png"].label is False
    assert rec[f"multi-all/{M3}/0.png"].prompt.startswith(f"Can you see {PLACEHOLDER} and <Ben> and <Yuki> ")
    assert not any("multi-all" in i.id for i in b.items(b.concept("Ben")))   # mi_mq filed once
    types = {(i.task, dict(i.meta)["type"]) for i in ann}
    assert {(REC, "si_sq"), (REC, "mi_sq"), (REC, "mi_mq"), (VQA, "si_sq"), (VQA, "mi_sq"), (VQA, "mi_mq"),
            (MC, "si_sq"), (MC, "s"), (MC, "mi_sq"), (MC, "mi_mq"), (MC, "m"), (CAPTION, "si"),
            (CAPTION, "mi")} <= types
    vqa = {i.id: i for i in ann if i.task == VQA}
    m0 = vqa[f"mc-llava/Ann/vqa/multi/{M3}/0.png/2"]
    assert dict(m0.meta)["concepts"] == "Ann,Yuki" and m0.answer == f"{PLACEHOLDER} and <Yuki> are talking."
    # the multi QA entry 1 of each image names only Yuki: filed under Yuki, type mi_sq
    yuki = {i.id: i for i in b.items(b.concept("Yuki"))}
    assert dict(yuki[f"mc-llava/Yuki/vqa/multi/{M3}/0.png/1"].meta)["type"] == "mi_sq"
    g = yuki[f"mc-llava/Yuki/mc/grounding/{M3}/0.png/0"]
    assert (g.prompt, g.options, g.answer, dict(g.meta)["kind"]) == (
        f"Where is {PLACEHOLDER}?", (("A", "Right"), ("B", "Left")), "A", "grounding")
    text = {i.id: i for i in ann if i.task == MC and dict(i.meta)["kind"] == "text"}
    t0 = text["mc-llava/Ann/mc/text/single/0"]
    assert t0.image is None and t0.options == (("A", "Doctor"), ("B", "Teacher")) and t0.answer == "B"
    assert dict(t0.meta)["query"] == f"What is {PLACEHOLDER}'s job?\nA. Doctor\nB. Teacher"
    caps = {dict(i.meta)["type"]: i for i in ann if i.task == CAPTION}
    assert dict(caps["mi"].meta)["names"] in ("Ann,Ben,Yuki", "Ann,Yuki")
    assert caps["si"].prompt.startswith(f"Can you see {PLACEHOLDER}, <Ben>, <Yuki> in the image?")
    assert [dict(i.meta)["names"] for i in ann if dict(i.meta)["type"] == "mi"] == ["Ann,Ben,Yuki", "Ann,Yuki"]
    # every multi-concept item is filed exactly once over the scenario
    multi = [i.id.split("/", 2)[2] for c in ("Ann", "Ben", "Yuki") for i in b.items(b.concept(c))
             if dict(i.meta)["type"] in ("mi_mq", "m", "mi") or "grounding" in i.id]
    assert len(multi) == len(set(multi))


def test_split_options():
    assert split_options("Who? A. x y B. z") == ("Who?", (("A", "x y"), ("B", "z")))
    assert split_options("Q\nA. one\nB. two\nC. three")[1][2] == ("C", "three")
    assert split_options("Is it B. nothing") is None
    assert split_options("Pick: A. B. c") is None               # an empty option


def _problem(root: Path) -> str:
    with pytest.raises(DataError) as e:
        MCLLaVA(root).concepts()
    lines = MCLLaVA(root).validate()
    assert lines and str(e.value).startswith(lines[0].split(" (and ")[0])
    return str(e.value)


MALFORMED = [
    ("concept_type missing", lambda r: (r / "concept_type.json").unlink(), "concept_type.json: file is missing"),
    ("concept_type not json", lambda r: (r / "concept_type.json").write_text("{"), "concept_type.json: not valid JSON"),
    ("concept_type wrong folder", lambda r: edit(r, "concept_type.json", lambda d: d.update(Yu="nine_concept")),
     "concept_type.json [Yu]: category folder 'nine_concept' does not exist"),
    ("concept name with slash", lambda r: edit(r, "concept_type.json", lambda d: d.update({"a/b": K2})),
     "concept_type.json [a/b]: concept name 'a/b' is refused"),
    ("scenarios missing", lambda r: (r / "scenarios.json").unlink(), "scenarios.json: file is missing"),
    ("scenarios not a list", lambda r: write_json(r / "scenarios.json", {"Alex_Yu": 1}),
     "scenarios.json: must be a JSON list"),
    ("scenario unknown concept", lambda r: edit(r, "scenarios.json", lambda d: d.append("Zed_Alex")),
     "scenarios.json [[2]]: scenario 'Zed_Alex': concept 'Zed' is not in concept_type.json"),
    ("concept in two scenarios", lambda r: edit(r, "scenarios.json", lambda d: d.append("Yu_Ann")),
     "scenarios.json [[2]]: concept 'Yu' is in scenario 'Alex_Yu' and in 'Yu_Ann'"),
    ("scenario mixes categories",
     lambda r: write_json(r / "scenarios.json", ["Alex_Ann", "Yu", "Ben_Yuki"]),
     "scenarios.json [[0]]: scenario 'Alex_Ann' mixes category folders"),
    ("concept in no scenario", lambda r: write_json(r / "scenarios.json", ["Alex_Yu"]),
     "concept_type.json [Ann]: concept 'Ann' is in no scenario"),
    ("train folder missing", lambda r: __import__("shutil").rmtree(r / K2 / "concept/train/Yu"),
     "concept/train/Yu: concept 'Yu' (scenario 'Alex_Yu') has no such folder"),
    ("train.json names a missing file", lambda r: edit(r, f"{K2}/concept/train/train.json",
                                                     lambda d: d["Alex"].append("9.png")),
     "train.json [Alex[3]]: image"),
    ("train.json lists a mask", lambda r: edit(r, f"{K2}/concept/train/train.json",
                                             lambda d: d["Alex"].append("0_mask.png")),
     "train.json [Alex[3]]: '0_mask.png' is a mask"),
    ("vqa not json", lambda r: (r / A_TEST / "vqa.json").write_text("[1,"), "Alex/vqa.json: not valid JSON"),
    ("vqa entry without AI", lambda r: edit(r, f"{A_TEST}/vqa.json",
                                          lambda d: d[next(iter(d))].pop("AI")),
     "Alex/vqa.json [[\"../mcdataset/two_concept/concept/test/Alex/0.png\"].AI]: must be a non-empty string, got missing"),
    ("vqa image of another concept", lambda r: edit(r, f"{A_TEST}/vqa.json", lambda d: d.update(
        {"../mcdataset/two_concept/concept/test/Yu/0.png": {"Human": "q", "AI": "a"}})),
     "is not an image of two_concept/concept/test/Alex/"),
    ("choice without options", lambda r: edit(r, f"{A_TEST}/choice.json",
                                            lambda d: d[next(iter(d))].update(Human="What is <Alex> doing?")),
     "Alex/choice.json [[\"../mcdataset/two_concept/concept/test/Alex/0.png\"]]: a choice question must list"),
    ("choice answer not a letter", lambda r: edit(r, f"{A_TEST}/choice.json",
                                                lambda d: d[next(iter(d))].update(AI="C")),
     "answer 'C' is not one of the option letters A, B"),
    ("qa not a list", lambda r: write_json(r / A_TEST / "qa.json", {"question": "x"}),
     "Alex/qa.json: must be a JSON list"),
    ("qa entry without answer", lambda r: edit(r, f"{A_TEST}/qa.json", lambda d: d[0].pop("answer")),
     "Alex/qa.json [[0].answer]: must be a non-empty string, got missing"),
    ("duplicate key", lambda r: (r / A_TEST / "vqa.json").write_text(
        '{"0.png": {"Human": "q", "AI": "a"}, "0.png": {"Human": "q", "AI": "b"}}'),
     "Alex/vqa.json [0.png]: key '0.png' appears more than once"),
    ("multi folder missing", lambda r: __import__("shutil").rmtree(r / M3),
     "multi/Ann_Ben_Yuki: scenario 'Ann_Ben_Yuki' has no multi-concept folder"),
    ("position missing", lambda r: (r / M3 / "position.json").unlink(), "Ann_Ben_Yuki/position.json: file is missing"),
    ("position lacks a concept", lambda r: edit(r, f"{M3}/position.json",
                                              lambda d: d[next(iter(d))].pop("Ben")),
     "position.json [[\"../mcdataset/three_concept/multi/Ann_Ben_Yuki/0.png\"]]: must give every concept of "
     "scenario 'Ann_Ben_Yuki' (null when absent); 'Ben' is missing"),
    ("position lacks an image", lambda r: edit(r, f"{M3}/position.json", lambda d: d.pop(next(iter(d)))),
     "position.json [0.png]: multi-concept image 0.png has no entry"),
    ("multi vqa not a list", lambda r: edit(r, f"{M3}/vqa.json",
                                          lambda d: d.update({next(iter(d)): {"Human": "q", "AI": "a"}})),
     "Ann_Ben_Yuki/vqa.json [[\"../mcdataset/three_concept/multi/Ann_Ben_Yuki/0.png\"]]: must be a list"),
    ("grounding without options", lambda r: edit(r, f"{M3}/vqa_position.json",
                                               lambda d: d[next(iter(d))][0].update(Human="Where is <Ben>?")),
     "vqa_position.json [[\"../mcdataset/three_concept/multi/Ann_Ben_Yuki/0.png\"][0]]: a choice question"),
    ("conversation not a list", lambda r: edit(r, "4o_generate_training_data/Ann/conversation.json",
                                             lambda d: d.update({next(iter(d)): "hi"})),
     "Ann/conversation.json [../mcdataset/three_concept/concept/train/Ann/0.png]: must be a list"),
]


@pytest.mark.parametrize("case,change,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_is_named(fresh, case, change, message):
    change(fresh)
    assert message in _problem(fresh)


def test_cases_json_alias_and_undecodable_image(fresh):
    (fresh / "scenarios.json").rename(fresh / "cases.json")
    assert len(MCLLaVA(fresh).concepts()) == 5
    (fresh / M3 / "0.png").write_bytes(b"not a png")
    lines = MCLLaVA(fresh).validate()
    assert len(lines) == 1 and "Ann_Ben_Yuki/0.png: image does not decode" in lines[0]


def test_cli_validate_items_and_error(fresh):
    cmd = [sys.executable, "-m", "unifybench.cli"]
    out = subprocess.run(cmd + ["validate", "--benchmark", "mc-llava", "--data-root", str(fresh)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    items = subprocess.run(cmd + ["items", "--benchmark", "mc-llava", "--data-root", str(fresh), "--task", "caption"],
                           capture_output=True, text=True)
    assert items.returncode == 0 and len(items.stdout.splitlines()) == 14
    (fresh / "scenarios.json").write_text("[")
    bad = subprocess.run(cmd + ["items", "--benchmark", "mc-llava", "--data-root", str(fresh)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "scenarios.json: not valid JSON" in bad.stderr and "Traceback" not in bad.stderr
