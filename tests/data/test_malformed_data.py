"""Malformed data for the three loaders: every message names the file and the field; validate() lists every
problem; the CLI exits 2 with one line (items) or the full list (validate), never a traceback."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unifybench.data.dreambench import DreamBench
from unifybench.data.unifybench import MINI_ROOT, UnifyBench
from unifybench.data.yollava import YoLLaVA
from unifybench.errors import DataError

from dreambench_fixture import SMALL_TXT  # noqa: E402
from dreambench_fixture import write_small as write_small_dreambench  # noqa: E402
from yollava_fixture import png_bytes, write_json, write_small  # noqa: E402

BO2 = "./yollava-data/test/bo/2.png"
VQA, TEXT, CAPS = "yollava-visual-qa.json", "text_qa.json", "subject-detailed-captions.json"


def edit(root: Path, name: str, change) -> None:
    path = root / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    write_json(path, data)


def vqa_bo2(change):
    return lambda r: edit(r, VQA, lambda d: change(d["bo"][BO2]))


def text_mam0(change):
    return lambda r: edit(r, TEXT, lambda d: change(d["mam"]["0"]))


def make_folder(path: Path, image: bytes = b"") -> None:
    path.mkdir(parents=True)
    (path / "0.png").write_bytes(image)


def only_train_bo(r: Path) -> None:
    for item in list(r.iterdir()):
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    make_folder(r / "train" / "bo")


def empty_splits(r: Path) -> None:
    for item in list(r.iterdir()):
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    (r / "train").mkdir()
    (r / "test").mkdir()


def symlink_out(rel: str):
    """`rel` replaced by a symlink to an image outside the data root (issue 15.7: never followed)."""
    def breakage(r: Path) -> None:
        outside = r.parent / "outside.png"
        outside.write_bytes((r / rel).read_bytes())
        (r / rel).unlink()
        (r / rel).symlink_to(outside)
    return breakage


def duplicate_key(r: Path) -> None:
    text = (r / TEXT).read_text(encoding="utf-8")
    entry = '{"question": "Is sks tall?", "option": {"A": "Yes", "B": "No"}, "correct_answer": "A"}'
    text = text.replace('"thao": {', '"thao": {"0": ' + entry + ", ", 1)
    (r / TEXT).write_text(text, encoding="utf-8")


# (id, breakage, file the message names, field, words in the message)
YOLLAVA_CASES = [
    ("vqa-missing-question", vqa_bo2(lambda e: e.pop("question")), VQA, f'bo["{BO2}"].question', "got missing"),
    ("vqa-options-wrong-type", vqa_bo2(lambda e: e.update(options=["Cat", "Dog"])), VQA,
     f'bo["{BO2}"].options', "got a list"),
    ("vqa-question-without-options", vqa_bo2(lambda e: e.pop("options")), VQA, f'bo["{BO2}"].options',
     "no options"),
    ("vqa-answer-not-an-option", vqa_bo2(lambda e: e.update(correct_answer="C")), VQA,
     f'bo["{BO2}"].correct_answer', "not among the options A, B"),
    ("vqa-unknown-option-letter", vqa_bo2(lambda e: e.update(options={"A": "Cat", "X": "Dog"})), VQA,
     f'bo["{BO2}"].options', "unknown option letter 'X'"),
    ("vqa-single-option", vqa_bo2(lambda e: e.update(options={"A": "Cat"})), VQA, f'bo["{BO2}"].options',
     "at least 2 options"),
    ("vqa-missing-image", lambda r: edit(r, VQA, lambda d: d["bo"].update({"./yollava-data/test/bo/9.png":
                                                                           d["bo"].pop(BO2)})),
     VQA, 'bo["./yollava-data/test/bo/9.png"]', "does not exist"),
    ("vqa-image-of-another-concept", lambda r: edit(r, VQA, lambda d: d["bo"].update({"test/mam/0.png":
                                                                                      d["bo"].pop(BO2)})),
     VQA, 'bo["test/mam/0.png"]', "test image of 'mam', not of 'bo'"),
    ("vqa-concept-name-escapes", lambda r: edit(r, VQA, lambda d: d.update({"../secrets": d.pop("cat-cup")})),
     VQA, "../secrets", "would escape the output folder"),
    ("vqa-unknown-concept", lambda r: edit(r, VQA, lambda d: d.update({"ghost": d.pop("cat-cup")})),
     VQA, "ghost", "has no folders"),
    ("vqa-invalid-json", lambda r: (r / VQA).write_text('{"bo": {', encoding="utf-8"), VQA, None,
     "not valid JSON"),
    ("vqa-top-level-list", lambda r: write_json(r / VQA, []), VQA, None, "must be a JSON object, got list"),
    ("text-concept-wrong-type", lambda r: edit(r, TEXT, lambda d: d.update(mam="Is sks a cat?")), TEXT, "mam",
     "got a string"),
    ("text-answer-wrong-type", text_mam0(lambda e: e.update(correct_answer=1)), TEXT, "mam.0.correct_answer",
     "got a number"),
    ("text-missing-answer", text_mam0(lambda e: e.pop("correct_answer")), TEXT, "mam.0.correct_answer",
     "missing"),
    ("text-letter-gap", text_mam0(lambda e: e.update(option={"A": "Cat", "C": "Dog"})), TEXT, "mam.0.option",
     "unknown option letter 'C' (with 2 options the letters are A, B)"),
    ("text-empty-question", text_mam0(lambda e: e.update(question="  ")), TEXT, "mam.0.question", "got empty"),
    ("text-duplicate-key", duplicate_key, TEXT, "0", "appears more than once"),
    ("caption-wrong-type", lambda r: edit(r, CAPS, lambda d: d.update(bo=["<sks> is a dog."])), CAPS, "bo",
     "got a list"),
    ("conversation-turn-without-answer",
     lambda r: edit(r, "example_training_data/bo/text-only-conversation.json",
                    lambda d: d["./data/train/bo/0.png"][1].pop("AI")),
     "example_training_data/bo/text-only-conversation.json", "./data/train/bo/0.png[1].AI", "got missing"),
    ("conversation-roles-out-of-order",
     lambda r: edit(r, "train/mam/json/text_conversation.json",
                    lambda d: d[0]["conversations"][0].update({"from": "bot"})),
     "train/mam/json/text_conversation.json", "[0].conversations[0].from", "alternate"),
    ("categories-unknown-category", lambda r: write_json(r / "categories.json", {"bo": "animal"}),
     "categories.json", "bo", "must be one of person, pet, object"),
    ("test-folder-without-train", lambda r: make_folder(r / "test" / "lonely"), "train/lonely", None,
     "no train folder"),
    ("concept-folder-with-hash", lambda r: make_folder(r / "test" / "bad#name"), "test/bad#name", None,
     "contains '#'"),
    ("missing-test-split", only_train_bo, "test", None, "test folder"),
    ("train-image-symlink-out-of-root", symlink_out("train/bo/10.png"), "train/bo/10.png", None,
     "leaves the data root"),
    ("empty-concepts", empty_splits, "test", None, "no concept folders"),
]


@pytest.fixture
def yollava_root(tmp_path):
    return write_small(tmp_path / "yl")


@pytest.mark.parametrize("case", YOLLAVA_CASES, ids=[c[0] for c in YOLLAVA_CASES])
def test_yollava_malformed(yollava_root, case):
    _, breakage, file, field, words = case
    breakage(yollava_root)
    bench = YoLLaVA(yollava_root)
    problems = bench.validate()
    where = f"{file} [{field}]: " if field else f"{file}: "
    assert len(problems) == 1, problems
    assert where in problems[0] and words in problems[0], problems[0]
    with pytest.raises(DataError) as e:
        for c in bench.concepts():
            bench.items(c)
    assert e.value.path.endswith(file) and e.value.field == field and words in str(e.value)


def test_yollava_undecodable_images_found_by_validate_only(yollava_root):
    bad = yollava_root / "test" / "mam" / "1.png"
    bad.write_bytes(b"not a png")
    truncated = yollava_root / "train" / "bo" / "10.png"
    truncated.write_bytes(png_bytes()[:40])
    bench = YoLLaVA(yollava_root)
    assert len(bench.concepts()) == 4                     # loading never opens an image
    problems = bench.validate()
    assert len(problems) == 2
    assert any(p.startswith(str(bad.resolve()) + ": image does not decode") for p in problems)
    assert any(p.startswith(str(truncated.resolve()) + ": image does not decode") for p in problems)


def test_yollava_every_problem_listed_and_first_raised_with_count(yollava_root):
    for breakage in (YOLLAVA_CASES[0][1], YOLLAVA_CASES[12][1], YOLLAVA_CASES[18][1]):
        breakage(yollava_root)
    bench = YoLLaVA(yollava_root)
    problems = bench.validate()
    assert len(problems) == 3
    assert {Path(p.split(" [")[0]).name for p in problems} == {VQA, TEXT, CAPS}
    with pytest.raises(DataError, match=r"and 2 more problems; see `unifybench validate`"):
        bench.concepts()


# --------------------------------------------------------------------------------------- DreamBench

def txt_edit(old, new):
    def breakage(r: Path):
        path = r / "prompts_and_classes.txt"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return breakage


def line_of(fragment: str, text: str = SMALL_TXT) -> str:
    return f"line {text.splitlines().index(fragment) + 1}"


P = "prompts_and_classes.txt"


def jpeg_bytes() -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 90, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def empty_live_list(r: Path) -> None:
    head = (r / P).read_text(encoding="utf-8").split("Live Subject Prompts", 1)[0]
    (r / P).write_text(head + "Live Subject Prompts\n\nprompt_list = [\n]\n", encoding="utf-8")


DREAMBENCH_CASES = [
    ("missing-prompt-file", lambda r: (r / P).unlink(), P, None, "file is missing"),
    ("no-class-table", txt_edit("subject_name,class\n", "subjects\n"), P, "subject_name,class",
     "class table"),
    ("table-line-without-comma", txt_edit("pup,dog\n", "pup,dog\noops\n"), P, f"line {4 + 2}",
     "expected 'subject_name,class'"),
    ("subject-name-escapes", txt_edit("pup,dog\n", "pup,dog\n../evil,dog\n"), P, "line 6",
     "would escape the output folder"),
    ("duplicate-subject", txt_edit("pup,dog\n", "pup,dog\npup,dog\n"), P, "line 6", "listed twice"),
    ("subject-without-folder", txt_edit("pup,dog\n", "pup,dog\nghost,dog\n"), "ghost", None, "has no folder"),
    ("subject-without-images", lambda r: [p.unlink() for p in (r / "teddy").iterdir()], "teddy", None,
     "has no images"),
    ("folder-not-in-table", lambda r: make_folder(r / "stray"), "stray", None, "not listed in the class table"),
    ("object-section-missing", txt_edit("Object Prompts\n", "Things\n"), P, "Object Prompts",
     "section is missing"),
    ("live-list-empty", empty_live_list, P, "Live Subject Prompts", "no prompts"),
    ("prompt-line-malformed", txt_edit("'a red {0} {1}'.format(unique_token, class_token)",
                                       "'a red {0} {1}'.format(class_token)"),
     P, line_of("'a red {0} {1}'.format(unique_token, class_token)"), "not a prompt line"),
    ("prompt-without-class-slot", txt_edit("'a red {0} {1}'", "'a red {0}'"), P,
     line_of("'a red {0} {1}'.format(unique_token, class_token)"), "lacks {0}"),
]



@pytest.mark.parametrize("case", DREAMBENCH_CASES, ids=[c[0] for c in DREAMBENCH_CASES])
def test_dreambench_malformed(tmp_path, case):
    _, breakage, file, field, words = case
    root = write_small_dreambench(tmp_path / "db", png=jpeg_bytes())
    breakage(root)
    bench = DreamBench(root)
    problems = bench.validate()
    where = f"{file} [{field}]: " if field else f"{file}: "
    assert len(problems) == 1, problems
    assert where in problems[0] and words in problems[0], problems[0]
    with pytest.raises(DataError) as e:
        bench.concepts()
    assert e.value.path.endswith(file) and e.value.field == field


def test_dreambench_undecodable_photo(tmp_path):
    root = write_small_dreambench(tmp_path / "db", png=jpeg_bytes())
    (root / "pup" / "3.jpg").write_bytes(b"\xff\xd8\xff broken")
    bench = DreamBench(root)
    assert len(bench.concepts()) == 2
    (problem,) = bench.validate()
    assert problem.startswith(str((root / "pup" / "3.jpg").resolve()) + ": image does not decode")


# --------------------------------------------------------------------------------------- UnifyBench

@pytest.fixture
def mini_copy(tmp_path):
    root = tmp_path / "ub"
    shutil.copytree(MINI_ROOT, root)
    return root


def info_class_number(r):
    edit(r, "concept/train/dog/info.json", lambda d: d.update({"class": 3}))


UNIFYBENCH_CASES = [
    ("list-dotdot", lambda r: write_json(r / "concepts_list.json", ["dog", ".."]), "concepts_list.json", "[1]",
     "would escape the output folder"),
    ("list-absolute", lambda r: write_json(r / "concepts_list.json", ["/etc"]), "concepts_list.json", "[0]",
     "would escape the output folder"),
    ("list-empty-name", lambda r: write_json(r / "concepts_list.json", ["dog", ""]), "concepts_list.json", "[1]",
     "it is empty"),
    ("list-number", lambda r: write_json(r / "concepts_list.json", ["dog", 7]), "concepts_list.json", "[1]",
     "must be a string"),
    ("list-empty", lambda r: write_json(r / "concepts_list.json", []), "concepts_list.json", None,
     "lists no concept"),
    ("info-class-wrong-type", info_class_number, "dog/info.json", "class", "got a number"),
    ("vqa-without-question", lambda r: write_json(r / "concept/test/dog/vqa.json", [{"image": "0.jpg",
                                                                                      "answer": "a dog"}]),
     "dog/vqa.json", "[0].question", "got missing"),
]


@pytest.mark.parametrize("case", UNIFYBENCH_CASES, ids=[c[0] for c in UNIFYBENCH_CASES])
def test_unifybench_malformed(mini_copy, case):
    _, breakage, file, field, words = case
    breakage(mini_copy)
    with pytest.raises(DataError) as e:
        bench = UnifyBench(mini_copy)
        for c in bench.concepts():
            bench.items(c)
    assert e.value.path.endswith(file) and e.value.field == field and words in str(e.value)


# ----------------------------------------------------------------------------------------------- CLI

def cli(*args):
    return subprocess.run([sys.executable, "-m", "unifybench.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_items_on_bad_data_is_one_line_exit_2(yollava_root):
    YOLLAVA_CASES[3][1](yollava_root)
    out = cli("items", "--benchmark", "yollava", "--data-root", str(yollava_root))
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1
    assert VQA in out.stderr and f'[bo["{BO2}"].correct_answer]' in out.stderr


def test_cli_validate_lists_every_problem_exit_2(yollava_root, tmp_path):
    for i in (0, 13, 22):
        YOLLAVA_CASES[i][1](yollava_root)
    (yollava_root / "test" / "thao" / "1.png").write_bytes(b"garbage")
    out = cli("validate", "--benchmark", "yollava", "--data-root", str(yollava_root))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 4
    assert any(f'[bo["{BO2}"].question]' in ln for ln in lines)
    assert any("[mam.0.correct_answer]" in ln for ln in lines)
    assert any("train/lonely" in ln for ln in lines) and any("thao/1.png" in ln for ln in lines)
    assert out.stdout.strip() == "yollava: 4 problems"

    db = write_small_dreambench(tmp_path / "db")
    DREAMBENCH_CASES[2][1](db)
    out = cli("run", "--method", "random", "--benchmark", "dreambench", "--data-root", str(db),
              "--output-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert "prompts_and_classes.txt [line 6]" in out.stderr
