"""The bundled mini forgetting sets: built by bench/make_mini_forgetting.py, read by the real loaders, used by
the tiny preset only, and never over data the user gave."""
import subprocess
import sys
from pathlib import Path

from unifybench.evaluators.forgetting.mmbench import MMBench
from unifybench.evaluators.forgetting.mmlu import MMLU
from unifybench.evaluators.forgetting.mmlu_yochameleon import YoChameleonMMLU
from unifybench.evaluators.forgetting.pope import POPE
from unifybench.data.unifybench import MINI_ROOT

REPO = Path(__file__).resolve().parents[3]


def test_files_are_what_the_generator_writes():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "make_mini_forgetting.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_tiny_run_reads_the_bundled_sets_in_their_real_formats(monkeypatch):
    for var in ("UNIFYBENCH_MMLU_ROOT", "UNIFYBENCH_POPE_ROOT", "UNIFYBENCH_MMBENCH_ROOT"):
        monkeypatch.delenv(var, raising=False)
    mmlu, pope, mmb, mmlu_yc = MMLU(), POPE(), MMBench(), YoChameleonMMLU()
    for ev in (mmlu, pope, mmb, mmlu_yc):
        ev.for_tiny_run()
    assert sorted(mmlu.subjects()) == ["abstract_algebra", "elementary_mathematics"]
    items = pope.items()
    assert len(items) == 24 and {i["label"] for i in items} == {"yes", "no"}
    photos = {Path(i["image"]).resolve() for i in items}
    assert all(p.is_file() and MINI_ROOT.resolve() in p.parents for p in photos)   # the mini's own photos
    for cat in ("random", "popular", "adversarial"):
        assert sum(i["label"] == "yes" for i in items if i["category"] == cat) == 4
    groups = mmb.groups()
    assert len(groups) == 4 and all(len(g) == 4 for g in groups.values())          # circular: 4 orders each
    assert {g[0]["answer"] for g in groups.values()} == {"A", "B", "C", "D"}
    assert mmlu_yc.data_files()


def test_user_data_wins_and_paper_runs_never_use_the_mini_sets(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIFYBENCH_POPE_ROOT", str(tmp_path))
    pope = POPE()
    pope.for_tiny_run()
    assert pope.params["data"] is None and pope.root() == tmp_path
    given = MMLU(data=str(tmp_path))
    given.for_tiny_run()
    assert given.params["data"] == str(tmp_path)
    monkeypatch.delenv("UNIFYBENCH_POPE_ROOT")
    from unifybench.runspec import RunSpec, make_evaluators
    evs = make_evaluators(["pope"], {}, frozenset(), RunSpec(method="yochameleon", tiny=False))
    assert evs[0].params["data"] is None
