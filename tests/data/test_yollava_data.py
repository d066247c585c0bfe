"""Yo'LLaVA loader on fixtures written in the release's formats: concepts, categories, natural order, rec
negatives, nested and flat visual QA, text QA ("option", bare sks), circular MC against a constant-"A"
answerer, captions (missing ones reported), both conversation forms, generation prompts, speed, CLI."""
import json
import shutil
import time
from collections import Counter

import pytest

from unifybench.cli import main
from unifybench.data.schema import GEN, MC, PLACEHOLDER, REC, Prediction
from unifybench.data.yollava import PHOTO_PROMPT, YoLLaVA
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.multiple_choice import MultipleChoice

from yollava_fixture import NO_CAPTION, RELEASE, write_json, write_release_sized, write_small  # noqa: E402


@pytest.fixture
def small(tmp_path):
    return write_small(tmp_path / "yollava")


@pytest.fixture
def bench(small):
    return YoLLaVA(small)


def by_task(items):
    return Counter(i.task for i in items)


# ---------------------------------------------------------------------------------------- concepts

def test_concepts_categories_and_natural_order(bench, small):
    cs = bench.concepts()
    assert [c.name for c in cs] == ["bo", "cat-cup", "mam", "thao"]
    got = {c.name: (c.category, c.class_noun, c.generation_type) for c in cs}
    assert got == {"bo": ("pet", "dog", "live_subject"), "mam": ("pet", "cat", "live_subject"),
                   "thao": ("person", "person", "live_subject"), "cat-cup": ("object", "object", "object")}
    bo = bench.concept("bo")
    assert [p.name for p in bo.train_images] == [f"{k}.png" for k in range(11)]      # 10.png last, not third
    assert bo.test_images == tuple(small / "test" / "bo" / f"{k}.png" for k in range(3))
    assert bo.train_images[0].is_absolute()
    assert not any("json" in str(p) for p in bench.concept("mam").train_images)      # sub-folders are no images


def test_categories_file_overrides_the_defaults(small):
    write_json(small / "categories.json", {"cat-cup": {"category": "pet", "class": "cat"}, "thao": "object"})
    bench = YoLLaVA(small)
    assert (bench.concept("cat-cup").category, bench.concept("cat-cup").class_noun) == ("pet", "cat")
    assert bench.concept("cat-cup").generation_type == "live_subject"
    assert (bench.concept("thao").category, bench.concept("thao").generation_type) == ("object", "object")
    assert small.resolve() / "categories.json" in bench.data_files()


def test_captions_and_the_missing_one_is_reported(bench, small):
    assert bench.concept("mam").info == "<sks> is a fluffy grey tabby cat with captivating yellow eyes."
    assert bench.caption("bo").startswith(PLACEHOLDER + " is a Shiba Inu")
    assert bench.caption("cat-cup") is None and bench.concept("cat-cup").info == ""
    assert bench.missing_captions == ["cat-cup"]
    (line,) = bench.warnings()
    assert "subject-detailed-captions.json [cat-cup]: no caption for concept 'cat-cup' (3 of 4" in line
    (small / "subject-detailed-captions.json").unlink()
    bare = YoLLaVA(small)
    assert bare.missing_captions == ["bo", "cat-cup", "mam", "thao"]
    assert any("subject-detailed-captions.json" in w and "absent" in w for w in bare.warnings())


# ------------------------------------------------------------------------------------------- items

def test_recognition_positives_and_negatives(bench):
    bo = bench.concept("bo")
    rec = [i for i in bench.items(bo) if i.task == REC]
    all_test = [p for c in bench.concepts() for p in c.test_images]
    assert [i.image for i in rec] == all_test                        # every test image once, no random images
    assert {i.image for i in rec if i.label} == set(bo.test_images)
    assert {i.image for i in rec if not i.label} == set(all_test) - set(bo.test_images)
    assert rec[0].id == "yollava/bo/rec/test/bo/0.png" and rec[0].prompt == "Is <sks> in this photo?"
    assert dict(rec[-1].meta)["kind"] == "other_concept"
    assert bench.random_images() == []


def test_visual_mc_nested_form_every_rotation(bench, small):
    mc = [i for i in bench.items(bench.concept("bo")) if i.task == MC and i.image is not None]
    assert [i.id for i in mc] == ["yollava/bo/mc/visual/test/bo/0.png@0", "yollava/bo/mc/visual/test/bo/0.png@1",
                                  "yollava/bo/mc/visual/test/bo/2.png@0", "yollava/bo/mc/visual/test/bo/2.png@1"]
    q0, q1 = mc[2], mc[3]
    assert q0.prompt == "What animal does <sks> resemble?" and q0.image == small / "test/bo/2.png"
    assert (q0.options, q0.answer) == ((("A", "Cat"), ("B", "Dog")), "B")
    assert (q1.options, q1.answer) == ((("A", "Dog"), ("B", "Cat")), "A")     # the answer follows its text
    assert dict(q0.meta) == {"kind": "visual_qa", "source": "yollava-visual-qa.json",
                             "base_id": "yollava/bo/mc/visual/test/bo/2.png", "rotation": "0", "n_rotations": "2"}
    assert bench.visual_qa_form == "nested"


def test_flat_readme_form_is_accepted_with_a_warning(small):
    nested = json.loads((small / "yollava-visual-qa.json").read_text())
    before = YoLLaVA(small)
    expected = {c.name: [i for i in before.items(c) if i.task == MC] for c in before.concepts()}
    flat = {img: entry for per_concept in nested.values() for img, entry in per_concept.items()}
    write_json(small / "yollava-visual-qa.json", flat)
    bench = YoLLaVA(small)
    assert {c.name: [i for i in bench.items(c) if i.task == MC] for c in bench.concepts()} == expected
    assert bench.visual_qa_form == "flat"
    assert any("flat form" in w and "yollava-visual-qa.json" in w for w in bench.warnings())


def test_text_mc_option_singular_and_bare_sks(bench):
    text = [i for i in bench.items(bench.concept("bo")) if i.task == MC and i.image is None]
    assert len(text) == 20 and all(dict(i.meta)["kind"] == "text_qa" for i in text)
    first = text[0]
    assert first.id == "yollava/bo/mc/text/0@0" and first.prompt == "Is <sks> a dog or a cat?"
    assert first.options == (("A", "Dog"), ("B", "Cat")) and first.answer == "A"
    assert [i.id.split("/")[-1] for i in text[::2]] == [f"{k}@0" for k in range(10)]    # "10" would sort last
    assert all(" sks" not in i.prompt for i in text)


def test_circular_items_defeat_the_constant_a_answerer(bench, tmp_path):
    """bo's text QA has 9 of 10 answers at "A" (the release: 396 of 400). Always answering "A" scores 0.9 on
    the source order alone, and 0 once every question must be right in both orders."""
    bo = bench.concept("bo")
    items = [i for i in bench.items(bo) if i.task == MC and dict(i.meta)["kind"] == "text_qa"]
    always_a = {i.id: Prediction(i.id, i.concept, i.task, i.prompt, text="A") for i in items}
    ev = MultipleChoice()
    scores = ev.score(bo, items, always_a, EvalContext(run_dir=tmp_path))
    source_order = [s for s in scores if s.detail["rotation"] == 0]
    assert sum(s.score for s in source_order) / len(source_order) == pytest.approx(0.9)
    assert ev.concept_value(scores) == 0.0
    extra = ev.extra_aggregates({"bo": scores})
    assert extra["const_a_accuracy"] == 0.0 and extra["const_a_per_order_accuracy"] == pytest.approx(0.5)
    gold = {i.id: Prediction(i.id, i.concept, i.task, i.prompt, text=dict(i.options)[i.answer]) for i in items}
    assert ev.concept_value(ev.score(bo, items, gold, EvalContext(run_dir=tmp_path))) == 1.0


def test_generation_prompts(bench):
    gen = {c.name: [i for i in bench.items(c) if i.task == GEN] for c in bench.concepts()}
    bo = gen["bo"]
    assert len(bo) == 26 and bo[0].id == "yollava/bo/gen/dreambench/0" and bo[0].prompt == "a <sks> in the jungle"
    assert "a <sks> wearing a red hat" in [i.prompt for i in bo]                    # live-subject list
    assert "a <sks> wearing a red hat" not in [i.prompt for i in gen["cat-cup"]]    # object list
    assert (bo[-1].id, bo[-1].prompt, bo[-1].n_images) == ("yollava/bo/gen/photo", PHOTO_PROMPT, 100)
    assert dict(bo[-1].meta)["protocol"] == "yochameleon" and {i.n_images for i in bo[:-1]} == {4}
    other = YoLLaVA(bench.root, images_per_prompt=2, photo_images=10)
    assert [i.n_images for i in other.items(other.concept("bo")) if i.task == GEN][-2:] == [2, 10]
    with pytest.raises(UserError, match="photo_images"):
        YoLLaVA(bench.root, photo_images=0)


def test_ids_stable_unique_and_item_order(bench, small):
    ids = [i.id for c in bench.concepts() for i in bench.items(c)]
    assert len(ids) == len(set(ids))
    assert ids == [i.id for c in YoLLaVA(small).concepts() for i in YoLLaVA(small).items(c)]
    tasks = [i.task for i in bench.items(bench.concept("mam"))]
    assert tasks == sorted(tasks, key=[REC, MC, GEN].index)


def test_train_conversations_both_forms(bench):
    assert bench.train_conversations(bench.concept("bo")) == [          # [YL] {image: [{Human, AI}]}, deduplicated
        ("What color is <sks>'s fur?", "<sks> has cream fur."), ("What is <sks>'s shape?", "<sks> is round."),
        ("What is <sks>'s shape?", "<sks> looks fluffy.")]
    assert bench.train_conversations(bench.concept("mam")) == [         # [YC] LLaVA list; image turns left out
        ("What color are <sks>'s eyes?", "<sks> has yellow eyes.")]
    assert bench.train_conversations(bench.concept("thao")) == []


def test_files_may_sit_under_baselines(small):
    (small / "baselines").mkdir()
    for name in ("text_qa.json", "subject-detailed-captions.json"):
        shutil.move(small / name, small / "baselines" / name)
    bench = YoLLaVA(small)
    assert by_task(bench.items(bench.concept("bo")))[MC] == 24 and bench.missing_captions == ["cat-cup"]
    assert small.resolve() / "baselines" / "text_qa.json" in bench.data_files()


def test_data_files_and_validate_clean(bench, small):
    names = {p.relative_to(small.resolve()).as_posix() if small.resolve() in p.parents else p.name
             for p in bench.data_files()}
    assert {"yollava-visual-qa.json", "text_qa.json", "subject-detailed-captions.json",
            "example_training_data/bo/text-only-conversation.json", "train/mam/json/text_conversation.json",
            "prompts_to_eval.json"} <= names
    assert bench.validate() == []          # the missing caption is a warning, not a problem


# ----------------------------------------------------------------------------------- size and speed

def test_release_sized_index_is_fast_and_opens_no_image(tmp_path, monkeypatch):
    import PIL.Image

    root = write_release_sized(tmp_path / "yl")

    def refuse(*a, **k):
        raise AssertionError("loading opened an image")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    import unifybench.evaluators.multiple_choice  # noqa: F401  (import time is not index time)
    start = time.perf_counter()
    bench = YoLLaVA(root)
    concepts = bench.concepts()
    items = [i for c in concepts for i in bench.items(c)]
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"index and items took {elapsed:.2f} s"
    assert len(concepts) == 40
    assert sum(len(c.train_images) for c in concepts) == 327 and sum(len(c.test_images) for c in concepts) == 333
    n = by_task(items)
    assert n[REC] == 40 * 333 and n[MC] == 2 * (170 + 400) and n[GEN] == 40 * 26
    text = [i for i in items if i.task == MC and i.image is None and i.id.endswith("@0")]
    assert len(text) == 400 and sum(i.answer == "A" for i in text) == 396
    assert sorted(bench.missing_captions) == sorted(NO_CAPTION)
    assert {c.name for c in concepts if c.category == "person"} == {
        "thuytien", "viruss", "ciin", "khanhvy", "oong", "thao", "willinvietnam", "denisdang", "phuc-map", "yuheng"}
    assert {c.name: len(c.test_images) for c in concepts} == {c: te for c, (_, te, _) in RELEASE.items()}


# ------------------------------------------------------------------------------------------------ CLI

def test_items_command_from_the_environment_variable(small, monkeypatch, capsys):
    monkeypatch.setenv("UNIFYBENCH_YOLLAVA_ROOT", str(small))
    assert main(["items", "--benchmark", "yollava"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    bench = YoLLaVA(small)
    assert [r["id"] for r in rows] == [i.id for c in bench.concepts() for i in bench.items(c)]
    for r in rows:
        assert list(r)[:7] == ["id", "concept", "task", "question", "options", "reference", "images"]
    mc = next(r for r in rows if r["id"] == "yollava/bo/mc/visual/test/bo/2.png@1")
    assert mc["options"] == {"A": "Dog", "B": "Cat"} and mc["reference"] == "A"
    assert mc["images"] == [str(small.resolve() / "test/bo/2.png")] and mc["question"].startswith("What animal")
    rec = next(r for r in rows if r["task"] == "rec")
    assert rec["reference"] is True and rec["options"] is None
    assert next(r for r in rows if r["task"] == "gen")["n_images"] == 4
    assert "yollava: 4 concepts, 17 train / 10 test images" in err and "rec 40" in err
    assert "mc 34" in err                  # (4 visual + 13 text questions) x 2 orders


def test_data_root_option_wins_and_missing_root_names_both(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNIFYBENCH_YOLLAVA_ROOT", str(tmp_path / "nowhere"))
    assert main(["items", "--benchmark", "yollava", "--data-root", str(small), "--task", "mc",
                 "--concepts", "mam"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["items", "--benchmark", "yollava"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "UNIFYBENCH_YOLLAVA_ROOT" in err and err.count("\n") == 1
    monkeypatch.delenv("UNIFYBENCH_YOLLAVA_ROOT")
    assert main(["validate", "--benchmark", "yollava"]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "UNIFYBENCH_YOLLAVA_ROOT" in err and err.count("\n") == 1


def test_validate_command_prints_warnings_and_counts(small, capsys):
    assert main(["validate", "--benchmark", "yollava", "--data-root", str(small)]) == 0
    out, err = capsys.readouterr()
    assert "warning:" in err and "cat-cup" in err
    assert "yollava: 4 concepts" in out and "0 problems" in out


def test_every_benchmark_root_has_its_environment_variable(tmp_path, monkeypatch, capsys):
    from unifybench.data.unifybench import MINI_ROOT
    from unifybench.runspec import make_benchmark, root_env_var
    assert [root_env_var(n) for n in ("unifybench", "yollava", "dreambench", "unifybench-mini")] == [
        "UNIFYBENCH_UNIFYBENCH_ROOT", "UNIFYBENCH_YOLLAVA_ROOT", "UNIFYBENCH_DREAMBENCH_ROOT",
        "UNIFYBENCH_UNIFYBENCH_MINI_ROOT"]
    monkeypatch.delenv("UNIFYBENCH_UNIFYBENCH_ROOT", raising=False)
    with pytest.raises(UserError, match="pass --data-root PATH or set UNIFYBENCH_UNIFYBENCH_ROOT"):
        make_benchmark("unifybench", None)
    monkeypatch.setenv("UNIFYBENCH_UNIFYBENCH_ROOT", str(MINI_ROOT))
    assert len(make_benchmark("unifybench", None).concepts()) == 4
    assert make_benchmark("unifybench-mini", None).name == "unifybench-mini"   # bundled: no root needed
