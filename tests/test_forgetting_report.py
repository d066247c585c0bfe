"""The forgetting stage: base vs personalized models, both conditions, resume, and the report's differences."""
import json
from types import SimpleNamespace

import pytest
import torch

from unifybench.evaluators.forgetting.base import ModelEvaluator
from unifybench.evaluators.forgetting.mmbench import MMBench
from unifybench.evaluators.forgetting.mmlu import MMLU
from unifybench.evaluators.forgetting.pope import POPE
from unifybench.forgetting import difference, forgetting_report, run_forgetting
from unifybench.methods.base import Method
from unifybench.report import forgetting_table
from unifybench.runspec import RunSpec

from forgetting_fixture import write_mmbench, write_mmlu, write_pope  # noqa: E402


class Fixed(ModelEvaluator):
    """Returns a value looked up from (model, condition); records what the runner handed it."""
    name = "fixed"
    presets = {"default": {}}

    def __init__(self, values=None, **kw):
        super().__init__(**kw)
        self.values = values or {}
        self.calls = []

    def evaluate_model(self, backbone, prefix_ids, ctx):
        from unifybench.models.concept_tokens import SplicedHead
        attached = isinstance(backbone.output_head(), SplicedHead)
        self.calls.append((attached, prefix_ids))
        key = ("concept" if attached else "base", "prompt" if prefix_ids else "plain")
        return {"value": self.values.get(key, 0.5), "n": 10, "n_failed": 0,
                "samples": [{"id": "q1", "score": 1.0}]}


def test_differences_and_table():
    assert difference(0.5, 0.52) == {"delta": pytest.approx(-0.02), "relative_pct": pytest.approx(-3.846, abs=1e-3)}
    assert difference(None, 0.5) == {"delta": None, "relative_pct": None}
    assert difference(0.1, 0.0)["relative_pct"] is None
    ev = Fixed()
    results = {"fixed": {"base": {"plain": {"value": 0.52, "n": 10, "n_failed": 0}},
                         "cat": {"plain": {"value": 0.52, "n": 10, "n_failed": 0},
                                 "prompt": {"value": 0.50, "n": 10, "n_failed": 0}},
                         "dog": {"plain": {"value": 0.52, "n": 10, "n_failed": 0},
                                 "prompt": {"value": 0.40, "n": 9, "n_failed": 1}}}}
    doc = forgetting_report(results, [ev], ["cat", "dog"], {"name": "m", "preset": "p"}, tiny=True)
    e = doc["evaluators"]["fixed"]
    assert e["base"]["metrics"] == {"value": 0.52}
    assert e["concepts"]["dog"]["prompt"]["difference"]["value"]["delta"] == pytest.approx(-0.12)
    assert e["mean"]["prompt"]["metrics"]["value"] == pytest.approx(0.45)
    assert e["mean"]["prompt"]["difference"]["value"]["relative_pct"] == pytest.approx((0.45 - 0.52) / 0.52 * 100)
    assert e["mean"]["plain"]["difference"]["value"]["delta"] == 0
    table = forgetting_table(doc)
    assert "RANDOM TINY MODELS" in doc["notice"] and "RANDOM TINY MODELS" in table
    assert "| **base** | plain | 0.520 |" in table
    assert "| cat | plain | 0.520 (same) |" in table and "| dog | prompt | 0.400 (-23.1%) |" in table
    assert "| **mean** | prompt | **0.450 (-13.5%)** |" in table


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    return ChameleonBackbone.load(tiny_chameleon_path(tmp_path_factory.mktemp("tiny")), require_decoder=False)


class FakeMethod(Method):
    """What run_forgetting needs from a method: backbone, load_artifact, personalized_prompt, describe
    (and the base class's `unload`: concept tokens detached)."""
    name = "fake"

    def __init__(self, backbone):  # no config, no setup: the backbone is given
        self.backbone = backbone
        self.ids = [backbone.token_id(f"<reserved{16200 + i}>") for i in range(3)]
        self.ctx = SimpleNamespace(progress=None)
        self.loaded = []

    def describe(self):
        return {"name": "fake", "preset": "tiny", "config": {}}

    def model_files(self):
        return {}

    def personalized_prompt(self):
        b = self.backbone
        return [self.ids[0]] + b.encode_text(" is ") + self.ids[1:] + b.encode_text(".")

    def load_artifact(self, concept, path):
        from unifybench.models.concept_tokens import ConceptTokens, attach
        tokens, _ = ConceptTokens.load(path)
        attach(self.backbone, tokens)
        self.loaded.append(concept.name)

    def fit_fake(self, out, concept, seed):
        """Concept tokens with moved rows, saved where the runner's fit stage would have put them."""
        from unifybench.models.concept_tokens import ConceptTokens
        b = self.backbone
        tokens = ConceptTokens.from_base(b.input_embeddings(), b.output_head(), self.ids, self.ids)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            tokens.embed.add_(torch.randn(tokens.embed.shape, generator=g))
            tokens.head.add_(torch.randn(tokens.head.shape, generator=g))
        cdir = out / "concepts" / concept
        cdir.mkdir(parents=True)
        tokens.save(cdir / "concept_tokens.safetensors", {"method": "fake"})
        (cdir / "fit.json").write_text(json.dumps({"key": "k", "concept": concept,
                                                   "artifact": f"concepts/{concept}/concept_tokens.safetensors"}))


def test_run_forgetting_base_and_personalized_both_conditions_and_resume(backbone, tmp_path, monkeypatch):
    from unifybench.models.concept_tokens import SplicedHead
    out = tmp_path / "run"
    method = FakeMethod(backbone)
    concepts = [SimpleNamespace(name="cat"), SimpleNamespace(name="dog")]
    for n, c in enumerate(concepts):
        method.fit_fake(out, c.name, n)
    spec = RunSpec(method="fake", output_dir=out, cache_dir=tmp_path / "cache", tiny=True)
    fixed = Fixed({("base", "plain"): 0.6, ("concept", "plain"): 0.6, ("concept", "prompt"): 0.3})
    mmlu = MMLU(data=str(write_mmlu(tmp_path / "mmlu", subjects=("anatomy",), n=3)))
    pope = POPE(data=str(write_pope(tmp_path / "pope")), limit=1, with_prompt=False)
    mmb = MMBench(data=str(write_mmbench(tmp_path / "mmb.tsv")), limit=1, with_prompt=False, max_new_tokens=2)
    method.load_artifact(concepts[1], out / "concepts/dog/concept_tokens.safetensors")  # left attached: the
    doc = run_forgetting(method, concepts, [fixed, mmlu, pope, mmb], out, spec)        # base must detach it

    prefix = method.personalized_prompt()
    assert fixed.calls == [(False, None), (True, None), (True, prefix), (True, None), (True, prefix)]
    assert method.loaded[-2:] == ["cat", "dog"]
    assert not isinstance(backbone.output_head(), SplicedHead)                         # detached at the end
    f = doc["evaluators"]["fixed"]
    assert f["base"]["metrics"]["value"] == 0.6
    assert f["concepts"]["cat"]["plain"]["difference"]["value"]["delta"] == 0
    assert f["mean"]["prompt"]["difference"]["value"]["relative_pct"] == pytest.approx(-50.0)
    m = doc["evaluators"]["mmlu"]
    assert set(m["concepts"]["cat"]) == {"plain", "prompt"} and m["base"]["n"] == 3
    assert 0 <= m["base"]["metrics"]["accuracy"] <= 1
    p = doc["evaluators"]["pope"]
    assert set(p["concepts"]["dog"]) == {"plain"} and p["base"]["n"] == 3
    assert set(p["base"]["metrics"]) == {"f1 adversarial", "f1 popular", "f1 random", "f1 pooled"}
    b = doc["evaluators"]["mmbench"]["base"]
    assert b["result"]["n_orders"] == 4 and b["n"] + b["n_failed"] == 1                   # one question, 4 orders

    fdir = out / "forgetting"
    assert json.loads((fdir / "forgetting.json").read_text()) == json.loads(json.dumps(doc))
    table = (fdir / "forgetting.md").read_text()
    assert "| **base** | plain |" in table and "| dog | prompt |" in table and "mmlu: accuracy" in table
    rows = [json.loads(l) for l in (fdir / "samples" / "mmlu" / "cat.prompt.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["model"] == "cat" and r["condition"] == "prompt" for r in rows)

    # Resume: every unit is reused, nothing is evaluated again, the report is identical.
    for ev in (fixed, mmlu, pope, mmb):
        monkeypatch.setattr(ev, "evaluate_model", lambda *a, **k: pytest.fail("re-evaluated a finished unit"))
    assert run_forgetting(method, concepts, [fixed, mmlu, pope, mmb], out, spec) == doc
    # A concept refitted (new artifact) is evaluated again; the base is not.
    monkeypatch.undo()
    fixed.calls.clear()
    (out / "concepts" / "dog").rename(tmp_path / "old-dog")
    method.fit_fake(out, "dog", 7)
    run_forgetting(method, concepts, [fixed], out, spec)
    assert fixed.calls == [(True, None), (True, prefix)]


def test_no_forgetting_evaluator_is_a_no_op(tmp_path):
    from unifybench.evaluators.multiple_choice import MultipleChoice
    assert run_forgetting(object(), [], [MultipleChoice()], tmp_path, RunSpec(method="x")) == {}


def test_a_method_without_a_backbone_is_refused_and_a_baseline_tests_only_its_base(backbone, tmp_path):
    from unifybench.errors import UserError
    fixed = Fixed({("base", "plain"): 0.6})

    class NoBackbone(Method):
        name = "api-thing"

        def __init__(self):
            self.ctx = SimpleNamespace(progress=None)

    with pytest.raises(UserError, match="'api-thing' has none"):
        run_forgetting(NoBackbone(), [], [fixed], tmp_path, RunSpec(method="x"))

    class Original(FakeMethod):
        personalized_prompt = None   # the Method default: no personalized model

    spec = RunSpec(method="x", output_dir=tmp_path, cache_dir=tmp_path / "cache")
    doc = run_forgetting(Original(backbone), [SimpleNamespace(name="cat")], [fixed], tmp_path, spec)
    assert doc["concepts"] == [] and fixed.calls == [(False, None)]
