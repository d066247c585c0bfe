"""UnifyBench-layout loader and the bundled mini benchmark: counts, ids, negatives, both t2i forms, errors."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, PLACEHOLDER, REC, TEXT_QA, VQA
from unifybench.data.unifybench import (MINI_ROOT, UnifyBench, UnifyBenchMini, natural_key,
                                        normalize_placeholder, parse_dreambench_prompts)
from unifybench.errors import DataError
from shared_data import require_dreambench

REPO = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
TASK_ORDER = [REC, VQA, TEXT_QA, GEN, KNOWLEDGE_GEN]


def read(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def images_in(folder):
    return [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]


@pytest.fixture(scope="module")
def mini():
    return UnifyBenchMini()


@pytest.fixture
def copy(tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(MINI_ROOT, root)
    return root


# ------------------------------------------------------------------------------------- the mini data

def test_mini_concepts_follow_concepts_list(mini):
    names = read(MINI_ROOT / "concepts_list.json")
    concepts = mini.concepts()
    assert len(concepts) >= 4 and [c.name for c in concepts] == names
    by_name = {c.name: c for c in concepts}
    assert by_name["dog"].category == "pet" and by_name["cat"].category == "pet"
    assert by_name["backpack"].category == "object" and by_name["bear_plushie"].class_noun == "stuffed animal"
    for c in concepts:
        info = read(MINI_ROOT / "concept" / "train" / c.name / "info.json")
        assert c.class_noun == info["class"] and c.generation_type == info["generation_type"]
        assert c.info.startswith(PLACEHOLDER + " is ") and f"<{c.name}>" not in c.info
        assert 1 <= len(c.extra_info) <= 2 and all(PLACEHOLDER in f for f in c.extra_info)
        assert len(c.train_images) == 3 and len(c.test_images) == 2
        for p in c.train_images + c.test_images:
            assert p.is_absolute() and p.is_file()
        assert c.info_path == MINI_ROOT.resolve() / "concept" / "train" / c.name / "info.json"


def test_item_counts_match_the_files(mini):
    root = MINI_ROOT
    names = read(root / "concepts_list.json")
    n_test = sum(len(images_in(root / "concept" / "test" / n)) for n in names)
    n_random = len(images_in(root / "random_images"))
    prompts = read(root / "prompts_to_eval.json")
    assert len(prompts["object"]) == 25 and len(prompts["live_subject"]) == 25
    for c in mini.concepts():
        test = root / "concept" / "test" / c.name
        t2i = read(test / "t2i_conditions.json")
        n_knowledge = len(t2i) - 1 if isinstance(t2i, list) else len(t2i["personalized_driven_generation"])
        expected = {REC: n_test + n_random, VQA: len(read(test / "vqa.json")),
                    TEXT_QA: len(read(test / "text_only.json")),
                    GEN: len(prompts[read(root / "concept/train" / c.name / "info.json")["generation_type"]]),
                    KNOWLEDGE_GEN: n_knowledge}
        items = mini.items(c)
        got = {t: sum(1 for i in items if i.task == t) for t in TASK_ORDER}
        assert got == expected
        assert 3 <= expected[VQA] <= 5 and 3 <= expected[TEXT_QA] <= 5
        # task order: rec, vqa, text_qa, gen, knowledge_gen
        assert [i.task for i in items] == [t for t in TASK_ORDER for _ in range(expected[t])]


def test_ids_unique_stable_and_well_formed(mini):
    first = [i.id for c in mini.concepts() for i in mini.items(c)]
    again = UnifyBenchMini()
    second = [i.id for c in again.concepts() for i in again.items(c)]
    assert first == second
    assert len(set(first)) == len(first)
    for c in mini.concepts():
        for i in mini.items(c):
            assert i.id.startswith(f"unifybench-mini/{c.name}/{i.task}/") and "#" not in i.id
            assert i.concept == c.name


def test_rec_positives_and_negatives(mini):
    dog, cat = mini.concept("dog"), mini.concept("cat")
    rec = [i for i in mini.items(dog) if i.task == REC]
    positives = {i.image for i in rec if i.label is True}
    negatives = {i.image for i in rec if i.label is False}
    assert positives == set(dog.test_images)
    assert set(cat.test_images) <= negatives
    assert set(mini.random_images()) <= negatives and len(mini.random_images()) >= 5
    assert not positives & negatives
    assert all(i.prompt == "Is <sks> in this photo?" for i in rec)
    assert rec[0].id == "unifybench-mini/dog/rec/concept/test/backpack/0.jpg"
    assert any(i.id == "unifybench-mini/dog/rec/random_images/0.jpg" for i in rec)
    assert mini.random_images() == sorted(mini.random_images())


def test_texts_use_the_placeholder(mini):
    for c in mini.concepts():
        for i in mini.items(c):
            assert f"<{c.name}>" not in i.prompt and f"<{c.name}>" not in (i.answer or "")
            if i.task != REC:
                assert PLACEHOLDER in i.prompt, i
        vqa = [i for i in mini.items(c) if i.task == VQA]
        assert all(i.image.parent.name == c.name and i.image.is_file() and i.answer for i in vqa)
    gen = [i for i in mini.items(mini.concept("dog")) if i.task == GEN]
    assert gen[0].prompt == "a <sks> in the jungle" and gen[0].n_images == 4
    assert "a <sks> wearing a red hat" in [i.prompt for i in gen]          # live-subject list
    obj = [i.prompt for i in mini.items(mini.concept("backpack")) if i.task == GEN]
    assert "a <sks> floating on top of water" in obj and "a <sks> wearing a red hat" not in obj
    two = UnifyBenchMini(images_per_prompt=2)
    assert {i.n_images for c in two.concepts() for i in two.items(c) if i.task in (GEN, KNOWLEDGE_GEN)} == {2}


def test_both_t2i_condition_forms(mini):
    forms = {c.name: read(MINI_ROOT / "concept/test" / c.name / "t2i_conditions.json") for c in mini.concepts()}
    assert {type(f) for f in forms.values()} == {list, dict}
    for c in mini.concepts():
        know = [i for i in mini.items(c) if i.task == KNOWLEDGE_GEN]
        if isinstance(forms[c.name], list):
            # element 0 is the plain "A photo of <c>." and is not a knowledge item; the rest test every fact
            assert all(i.facts == c.extra_info for i in know)
            assert [i.id.rsplit("/", 1)[1] for i in know] == [str(k) for k in range(1, len(forms[c.name]))]
            assert not any(i.prompt == "A photo of <sks>." for i in know)
        else:
            assert [i.facts for i in know] == [(f,) for f in c.extra_info[:len(know)]]
        assert know and all(PLACEHOLDER in i.prompt for i in know)


def test_train_conversations(mini):
    for c in mini.concepts():
        conv = mini.train_conversations(c)
        raw = read(MINI_ROOT / "concept/train" / c.name / "conversations.json")
        assert len(conv) == sum(len(v) for v in raw.values()) >= 4
        for q, a in conv:
            assert q and a and "<image>" not in q and f"<{c.name}>" not in q + a
        assert any(PLACEHOLDER in q for q, _ in conv)


def test_data_files_and_validate(mini):
    files = mini.data_files()
    assert files == sorted(files) and all(f.is_file() for f in files)
    names = {f.relative_to(MINI_ROOT.resolve()).as_posix() for f in files}
    assert {"concepts_list.json", "prompts_to_eval.json", "concept/train/train_images.json",
            "concept/train/dog/info.json", "concept/test/cat/vqa.json"} <= names
    assert mini.validate() == []


def test_size_license_and_attribution():
    files = [p for p in MINI_ROOT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3 * 1024 * 1024
    attribution = (MINI_ROOT / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "DreamBooth" in attribution and "Nataniel Ruiz" in attribution and "CC-BY 4.0" in attribution
    assert "Attribution 4.0" in (MINI_ROOT / "LICENSE.md").read_text(encoding="utf-8")
    for p in files:
        if p.suffix == ".jpg":
            assert f"`{p.relative_to(MINI_ROOT).as_posix()}`" in attribution, p


def test_loading_opens_no_image(copy, monkeypatch):
    import PIL.Image

    def refuse(*a, **k):
        raise AssertionError("loading opened an image")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    bench = UnifyBench(copy)
    assert sum(len(bench.items(c)) for c in bench.concepts()) > 100


def test_bundled_data_is_what_make_mini_builds(tmp_path):
    DREAMBENCH = require_dreambench()
    spec = importlib.util.spec_from_file_location("make_mini", REPO / "bench" / "make_mini.py")
    make_mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_mini)
    out = tmp_path / "mini"
    make_mini.build(DREAMBENCH, out)
    fresh = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    bundled = sorted(p.relative_to(MINI_ROOT).as_posix() for p in MINI_ROOT.rglob("*") if p.is_file())
    assert fresh == bundled
    for f in fresh:
        if not f.endswith(".jpg"):       # JPEG bytes may differ between Pillow builds; texts must not
            assert (out / f).read_bytes() == (MINI_ROOT / f).read_bytes(), f
    assert parse_dreambench_prompts((DREAMBENCH / "prompts_and_classes.txt").read_text()) == \
        read(MINI_ROOT / "prompts_to_eval.json")


# -------------------------------------------------------------------------------- layout variants

def test_natural_order_cropped_and_folder_listing(copy):
    (copy / "concept/train/train_images.json").unlink()
    dog = copy / "concept/train/dog"
    for name in ("10.jpg", "9.jpg"):
        shutil.copyfile(dog / "0.jpg", dog / name)
    (dog / "cropped").mkdir()
    for name in ("10.png", "2.png", "2_mask.png"):
        shutil.copyfile(dog / "0.jpg", dog / "cropped" / name)
    c = UnifyBench(copy).concept("dog")
    assert [p.name for p in c.train_images] == ["0.jpg", "1.jpg", "2.jpg", "9.jpg", "10.jpg"]
    assert [p.name for p in c.cropped_images] == ["2.png", "10.png"]
    assert sorted(["10.png", "2.png", "a.png"], key=natural_key) == ["2.png", "10.png", "a.png"]


def test_train_images_json_wins_over_the_folder(copy):
    (copy / "concept/train/train_images.json").write_text(json.dumps({"dog": ["2.jpg", "0.jpg"]}))
    bench = UnifyBench(copy)
    assert [p.name for p in bench.concept("dog").train_images] == ["0.jpg", "2.jpg"]
    assert len(bench.concept("cat").train_images) == 3     # not listed: every image of the folder


def test_placeholder_forms_and_category_override(copy):
    test = copy / "concept/test/dog"
    (test / "text_only.json").write_text(json.dumps([
        {"question": "Is <dog> happy?", "answer": "Yes, <dog> is."},
        {"question": "Is <sks> happy?", "answer": "sks is."},
        {"query": "Where is sks's bed?", "answer": "By the door."}]))
    info = read(copy / "concept/train/dog/info.json")
    info["category"] = "object"
    (copy / "concept/train/dog/info.json").write_text(json.dumps(info))
    bench = UnifyBench(copy)
    qa = [(i.prompt, i.answer) for i in bench.items(bench.concept("dog")) if i.task == TEXT_QA]
    assert qa == [("Is <sks> happy?", "Yes, <sks> is."), ("Is <sks> happy?", "<sks> is."),
                  ("Where is <sks>'s bed?", "By the door.")]
    assert bench.concept("dog").category == "object"
    assert bench.items(bench.concept("dog"))[0].id.startswith("unifybench/dog/rec/")
    assert normalize_placeholder("a {0} {1} on the beach", "x") == "a <sks> on the beach"
    assert normalize_placeholder("tasks and sksx stay", "x") == "tasks and sksx stay"


def test_person_category_and_prompt_fallbacks(copy):
    info_path = copy / "concept/train/cat/info.json"
    info = read(info_path)
    info["conversation_type"] = "human"
    del info["generation_type"]
    info_path.write_text(json.dumps(info))
    (copy / "prompts_to_eval.json").unlink()      # a real UnifyBench root has no prompt list: bundled copy
    bench = UnifyBench(copy)
    cat = bench.concept("cat")
    assert cat.category == "person" and cat.generation_type == "live_subject"
    assert MINI_ROOT.resolve() / "prompts_to_eval.json" in bench.data_files()
    assert len([i for i in bench.items(cat) if i.task == GEN]) == 25
    fmt = ".format(unique_token, class_token)"
    txt = (f"Prompts\n\nObject Prompts\n\nprompt_list = [\n'a {{0}} {{1}} in the snow'{fmt},\n]\n\n"
           f"Live Subject Prompts\n\nprompt_list = [\n'a {{0}} {{1}} in a chef outfit'{fmt}\n]\n")
    (copy / "prompts_and_classes.txt").write_text(txt)
    bench = UnifyBench(copy)
    assert [i.prompt for i in bench.items(bench.concept("cat")) if i.task == GEN] == ["a <sks> in a chef outfit"]
    assert [i.prompt for i in bench.items(bench.concept("backpack")) if i.task == GEN] == ["a <sks> in the snow"]
    assert (copy / "prompts_and_classes.txt").resolve() in bench.data_files()


# ------------------------------------------------------------------------------------------- errors

def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        UnifyBench(tmp_path / "nowhere")


def test_malformed_info_json(copy):
    info = copy / "concept/train/cat/info.json"
    info.write_text('{"class": "cat",')
    with pytest.raises(DataError) as e:
        UnifyBench(copy).concepts()
    assert e.value.path.endswith("cat/info.json") and "not valid JSON" in str(e.value)


def test_info_json_without_class(copy):
    info = copy / "concept/train/cat/info.json"
    data = read(info)
    del data["class"]
    info.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        UnifyBench(copy).concepts()
    assert e.value.path.endswith("cat/info.json") and e.value.field == "class"
    assert "info.json [class]" in str(e.value)


@pytest.mark.parametrize("breakage,path_end,field", [
    (lambda r: (r / "concepts_list.json").unlink(), "concepts_list.json", None),
    (lambda r: (r / "concepts_list.json").write_text('{"dog": 1}'), "concepts_list.json", None),
    (lambda r: (r / "concepts_list.json").write_text('["dog", "ghost"]'), "concept/train/ghost", None),
    (lambda r: (r / "concepts_list.json").write_text('["dog", "dog"]'), "concepts_list.json", "[1]"),
    (lambda r: (r / "concept/test/dog/vqa.json").write_text('{"image": "0.jpg"}'), "dog/vqa.json", None),
    (lambda r: (r / "concept/test/dog/vqa.json").write_text('[{"image": "7.jpg", "question": "q", "answer": "a"}]'),
     "dog/vqa.json", "[0].image"),
    (lambda r: (r / "concept/test/dog/text_only.json").write_text('[{"question": "q"}]'),
     "dog/text_only.json", "[0].answer"),
    (lambda r: (r / "concept/test/cat/t2i_conditions.json").write_text(
        '{"personalized_driven_generation": ["a", "b", "c"]}'), "cat/t2i_conditions.json",
     "personalized_driven_generation[2]"),
    (lambda r: (r / "concept/test/cat/t2i_conditions.json").write_text('{"prompts": []}'),
     "cat/t2i_conditions.json", "personalized_driven_generation"),
    (lambda r: (r / "concept/train/dog/conversations.json").write_text('[]'), "dog/conversations.json", None),
    (lambda r: (r / "concept/train/train_images.json").write_text('{"dog": ["nope.jpg"]}'),
     "train_images.json", "dog[0]"),
    (lambda r: shutil.rmtree(r / "concept/test/cat"), "concept/test/cat", None),
])
def test_structural_errors_name_file_and_field(copy, breakage, path_end, field):
    breakage(copy)
    with pytest.raises(DataError) as e:
        bench = UnifyBench(copy)
        for c in bench.concepts():
            bench.items(c)
    assert e.value.path.endswith(path_end) and e.value.field == field


def test_validate_reports_every_bad_image(copy):
    bad = copy / "concept/test/dog/1.jpg"
    bad.write_bytes(b"not an image at all")
    truncated = copy / "random_images/3.jpg"
    truncated.write_bytes(truncated.read_bytes()[:600])
    (copy / "concept/test/bear_plushie/0.jpg").unlink()
    (copy / "concept/test/bear_plushie/1.jpg").unlink()
    (copy / "concept/test/bear_plushie/vqa.json").write_text("[]")
    bench = UnifyBench(copy)
    assert len(bench.concepts()) == 4            # loading does not look inside images
    problems = bench.validate()
    assert len(problems) == 3
    assert any(str(bad) in p for p in problems) and any(str(truncated) in p for p in problems)
    assert any("bear_plushie" in p and "no test images" in p for p in problems)



def test_validate_lists_every_broken_concept_not_just_the_first(tmp_path):
    import json as _json
    import shutil as _shutil
    from unifybench.data.unifybench import UnifyBench, UnifyBenchMini
    from unifybench.errors import DataError as _DataError
    root = tmp_path / "data"
    _shutil.copytree(UnifyBenchMini().root, root)
    names = _json.loads((root / "concepts_list.json").read_text())
    (root / "concept" / "train" / names[0] / "info.json").write_text("{broken")
    (root / "concept" / "test" / names[2] / "vqa.json").write_text("{}")
    bench = UnifyBench(root)
    problems = bench.validate()
    assert any(names[0] in p and "info.json" in p for p in problems)
    assert any(names[2] in p and "vqa.json" in p for p in problems)
    try:
        bench.concepts()
    except _DataError as e:
        assert "1 more problem" in str(e)
    else:
        raise AssertionError("no error")
