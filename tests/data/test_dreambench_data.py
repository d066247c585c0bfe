"""DreamBench loader on the real dataset (../shared/data/dreambench or UNIFYBENCH_DREAMBENCH_ROOT; skipped, with the
reason shown, when absent) and on a small folder in the same layout written here."""
import json
from pathlib import Path

import pytest

from unifybench.cli import main
from unifybench.data.dreambench import DreamBench, render_prompt
from unifybench.data.schema import GEN, PLACEHOLDER
from unifybench.errors import UserError
from dreambench_fixture import write_small
from shared_data import require_dreambench

LIVE = ["cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"]


@pytest.fixture(scope="module")
def shared():
    return DreamBench(require_dreambench())


# ------------------------------------------------------------------------------------- the real data

def test_real_dreambench_counts(shared):
    cs = shared.concepts()
    assert len(cs) == 30
    assert sum(len(c.train_images) for c in cs) == 158
    assert [c.name for c in cs if c.generation_type == "live_subject"] == LIVE
    assert sum(c.generation_type == "object" for c in cs) == 21
    assert {c.category for c in cs if c.name in LIVE} == {"pet"}
    assert {c.category for c in cs if c.name not in LIVE} == {"object"}
    for c in cs:
        assert c.train_images == c.test_images and 4 <= len(c.train_images) <= 6    # no split in DreamBench
        assert [p.name for p in c.train_images] == sorted(p.name for p in c.train_images)
    assert shared.concept("bear_plushie").class_noun == "stuffed animal"
    assert shared.concept("pink_sunglasses").class_noun == "glasses"
    assert len(shared.prompts("object")) == 25 and len(shared.prompts("live_subject")) == 25


def test_real_dreambench_items(shared):
    items = {c.name: shared.items(c) for c in shared.concepts()}
    assert all(len(v) == 25 and {i.task for i in v} == {GEN} for v in items.values())
    assert sum(i.n_images for v in items.values() for i in v) == 3000
    dog = items["dog"]
    assert dog[0].id == "dreambench/dog/gen/0" and dog[0].prompt == "a <sks> dog in the jungle"
    assert "a <sks> dog wearing a red hat" in [i.prompt for i in dog]
    assert dict(dog[0].meta) == {"generation_type": "live_subject", "template": "a {0} {1} in the jungle"}
    backpack = [i.prompt for i in items["backpack"]]
    assert "a <sks> backpack floating on top of water" in backpack and "a cube shaped <sks> backpack" in backpack
    assert not any("hat" in p for p in backpack)
    ids = [i.id for v in items.values() for i in v]
    assert len(set(ids)) == 750
    for c in shared.concepts():
        assert all(PLACEHOLDER in i.prompt and c.class_noun in i.prompt for i in items[c.name])
    assert shared.data_files() == [shared.root.resolve() / "prompts_and_classes.txt"]


def test_real_dreambench_validates_and_two_images_per_prompt(shared):
    assert shared.validate() == []
    two = DreamBench(shared.root, images_per_prompt=2)
    assert sum(i.n_images for c in two.concepts() for i in two.items(c)) == 1500


def test_real_dreambench_through_the_cli(shared, monkeypatch, capsys):
    monkeypatch.setenv("UNIFYBENCH_DREAMBENCH_ROOT", str(shared.root))
    assert main(["items", "--benchmark", "dreambench", "--concepts", "cat,teapot"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 50 and rows[0]["question"] == "a <sks> cat in the jungle" and rows[0]["n_images"] == 4
    assert rows[0]["reference"] is None and rows[0]["images"] == [] and rows[-1]["concept"] == "teapot"
    assert "dreambench: 2 concepts, 10 train / 10 test images; 50 items (gen 50)" in err


# ------------------------------------------------------------------------------- a small fixture

def test_small_layout_live_from_class_and_natural_order(tmp_path):
    bench = DreamBench(write_small(tmp_path / "db"))
    assert [c.name for c in bench.concepts()] == ["pup", "teddy"]
    pup, teddy = bench.concept("pup"), bench.concept("teddy")
    assert (pup.generation_type, pup.category, teddy.generation_type) == ("live_subject", "pet", "object")
    assert [p.name for p in pup.train_images][-3:] == ["8.jpg", "9.jpg", "10.jpg"]
    assert [i.prompt for i in bench.items(pup)] == ["a <sks> dog in the jungle", "a <sks> dog wearing a red hat",
                                                   "a <sks> dog in a chef outfit"]
    assert [i.prompt for i in bench.items(teddy)] == ["a <sks> stuffed animal in the jungle",
                                                     "a red <sks> stuffed animal"]
    assert render_prompt("a {0} {1} on the beach", "can") == "a <sks> can on the beach"


def test_root_from_environment_or_clear_error(tmp_path, monkeypatch, capsys):
    root = write_small(tmp_path / "db")
    monkeypatch.delenv("UNIFYBENCH_DREAMBENCH_ROOT", raising=False)
    with pytest.raises(UserError) as e:
        DreamBench()
    assert "--data-root" in str(e.value) and "UNIFYBENCH_DREAMBENCH_ROOT" in str(e.value)
    assert main(["items", "--benchmark", "dreambench"]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "UNIFYBENCH_DREAMBENCH_ROOT" in err and err.count("\n") == 1
    monkeypatch.setenv("UNIFYBENCH_DREAMBENCH_ROOT", str(root))
    assert [c.name for c in DreamBench().concepts()] == ["pup", "teddy"]
    assert main(["items", "--benchmark", "dreambench", "--task", "gen"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
