"""UniCTokens on the tiny Show-o: prompts, the three stages, resumption, reproducibility, ablations, a run."""
import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, REC, TEXT_QA
from unifybench.data.unifybench import UnifyBenchMini
from unifybench.methods.base import RunContext
from unifybench.methods.unictokens import UniCTokens, kmeans
from unifybench.models.concept_tokens import ConceptTokens

from tiny_methods import base_state

FAST = {"s1_epochs": 2, "s2_epochs": 2, "s3_epochs": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def method(cache):
    m = UniCTokens(RunContext(cache_dir=cache, tiny=True), "tiny", FAST)
    m.setup()
    return m


@pytest.fixture(scope="module")
def fitted(method, bench, tmp_path_factory):
    concept = bench.concepts()[0]
    before = base_state(method)
    out = tmp_path_factory.mktemp("fit")
    artifact = method.fit(concept, bench, out)
    return concept, out, artifact, before, base_state(method)


def tok(m, i):
    return m.all_ids[1 + i]


def test_prompt_builders_exact_token_sequences(method):
    m, b = method, method.backbone
    und = m.understanding_prompt("Is <sks> here?")
    assert und == (b.encode_text("USER: ") + [m.sks] + b.encode_text(" is ")
                   + [tok(m, i) for i in range(16)] + [tok(m, i) for i in range(24, 32)]
                   + b.encode_text(".\nIs ") + [m.sks] + b.encode_text(" here? ASSISTANT:"))
    gen = m.generation_prompt("a <sks> in the snow")
    assert gen == (b.encode_text("a ") + [tok(m, i) for i in range(24)] + b.encode_text(" ") + [m.sks]
                   + b.encode_text(" in the snow"))
    assert not set(gen) & {tok(m, i) for i in range(24, 32)}
    assert not set(und) & {tok(m, i) for i in range(16, 24)}
    # after stage 1 only (17 rows) both use <sks> + tokens 0..15
    s1 = m.all_ids[:17]
    assert [t for t in m.understanding_prompt("q", s1) if t in m.all_ids] == [m.sks] + [tok(m, i) for i in range(16)]
    assert [t for t in m.generation_prompt("<sks>", s1) if t in m.all_ids] == [tok(m, i) for i in range(16)] + [m.sks]
    t2i = b.t2i_prompt(gen)
    assert len(t2i) == m.config.max_text_len + 1 and t2i[t2i.index(b.t2i_id) + 1] == b.eot_id


def test_training_samples_formats(method, bench):
    import random
    m, b = method, method.backbone
    concept = bench.concepts()[0]
    samples = m.mmu_samples(concept, bench, random.Random(0), m.all_ids[:17])
    s = samples[0]
    assert s.ids[:2] == [b.mmu_id, b.soi_id] and s.ids[2 + 64] == b.eoi_id
    assert s.ids[3 + 64] != b.eot_id            # the code: no <|endoftext|> after <|eoi|> in training
    answer = [t for t, sup in zip(s.ids, s.supervised) if sup]
    assert answer[-1] == b.eot_id and not any(s.supervised[:3 + 64])
    assert {x.kind for x in samples} == {"rec_positive", "rec_negative", "qa"}
    rec_only = m.mmu_samples(concept, bench, random.Random(0), m.all_ids, recognition_only=True)
    assert {x.kind for x in rec_only} == {"rec_positive", "rec_negative"}


def test_base_weights_bit_identical_and_stage_artifacts(method, fitted):
    concept, out, artifact, before, after = fitted
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert artifact == out / "stage3.safetensors"
    rows = {}
    for stage, n in (("stage1", 17), ("stage2", 25), ("stage3", 33)):
        tokens, header = ConceptTokens.load(out / f"{stage}.safetensors")
        assert tokens.embed.shape == (n, 64) and tokens.head.shape == (n, 64) and tokens.head_bias.shape == (n,)
        assert header["method"] == "unictokens" and header["concept"] == concept.name
        rows[stage] = tokens
    assert (out / "perception.safetensors").is_file()
    # stage 3 trains only <sks> and the perception rows; tokens 0..23 are stage 2's
    assert torch.equal(rows["stage3"].embed[1:25], rows["stage2"].embed[1:25])
    assert not torch.equal(rows["stage3"].embed[0], rows["stage2"].embed[0])
    # stage 1 rows were trained further in stage 2
    assert not torch.equal(rows["stage2"].embed[1:17], rows["stage1"].embed[1:17])


def test_loss_falls_in_each_stage(fitted):
    out = fitted[1]
    for stage in ("stage1", "stage2", "stage3"):
        _, header = ConceptTokens.load(out / f"{stage}.safetensors")
        assert header["loss_after"] < header["loss_before"], (stage, header["loss_before"], header["loss_after"])
        assert len(header["epoch_losses"]) == 2


def test_same_seed_reproduces_and_stages_resume(method, bench, fitted, tmp_path):
    concept, out, artifact = fitted[:3]
    again = method.fit(concept, bench, tmp_path)
    for name in ("stage1", "stage2", "perception", "stage3"):
        a, _ = ConceptTokens.load(out / f"{name}.safetensors")
        b, _ = ConceptTokens.load(tmp_path / f"{name}.safetensors")
        assert torch.equal(a.embed, b.embed) and torch.equal(a.head, b.head), name
    # a crash after stage 2: stages 1 and 2 are reused, not retrained, and stage 3 comes out the same
    (tmp_path / "stage3.safetensors").unlink()
    (tmp_path / "perception.safetensors").unlink()
    mtimes = {n: (tmp_path / f"{n}.safetensors").stat().st_mtime_ns for n in ("stage1", "stage2")}
    method.fit(concept, bench, tmp_path)
    assert mtimes == {n: (tmp_path / f"{n}.safetensors").stat().st_mtime_ns for n in ("stage1", "stage2")}
    a, _ = ConceptTokens.load(out / "stage3.safetensors")
    b, _ = ConceptTokens.load(again)
    assert torch.equal(a.embed, b.embed)


def test_predict_answers_and_images(method, bench, fitted, tmp_path):
    concept, _, artifact = fitted[:3]
    method.load_artifact(concept, artifact)
    items = bench.items(concept)
    chosen = [i for i in items if i.task == REC][:1] + [i for i in items if i.task == TEXT_QA][:1] + \
        [i for i in items if i.task in (GEN, KNOWLEDGE_GEN)]
    preds = method.predict(concept, chosen, tmp_path)
    text = [p for p in preds if p.task in (REC, TEXT_QA)]
    assert len(text) == 2 and all(isinstance(p.text, str) for p in text)
    images = [p for p in preds if p.task in (GEN, KNOWLEDGE_GEN)]
    assert [p.task for p in images] == [GEN, KNOWLEDGE_GEN]              # gen_prompts_limit 1 per task
    from PIL import Image
    for p in images:
        assert len(p.images) == 2
        with Image.open(p.images[0]) as im:
            assert im.size == (128, 128)


def test_table3_stage_ablations(cache, bench, tmp_path):
    concept = bench.concepts()[1]
    m = UniCTokens(RunContext(cache_dir=cache, tiny=True), "tiny",
                   {"stages": "2", "s2_epochs": 1, "perception_images": 1})
    m.setup()
    art = m.fit(concept, bench, tmp_path)
    assert art.name == "stage2.safetensors" and not (tmp_path / "stage1.safetensors").exists()
    m.load_artifact(concept, art)
    assert m.active == m.all_ids[:25]
    only1 = UniCTokens(RunContext(cache_dir=cache, tiny=True), "tiny", {"stages": "1", "s1_epochs": 1})
    assert only1.stage_list == [1]
    for init in ("full_image", "random_patch", "none", "whitened"):
        mm = UniCTokens(RunContext(cache_dir=cache, tiny=True), "tiny", {"s3_init": init})
        mm.backbone, mm.all_ids = m.backbone, m.all_ids
        mm.__dict__.update({k: v for k, v in m.__dict__.items() if k not in ("config", "preset")})
        import random
        cents = mm.perception(concept, random.Random(0), torch.Generator().manual_seed(0), tmp_path)
        assert (cents is None) == (init == "none")
        if cents is not None:
            assert cents.shape == (8, 64)
    with pytest.raises(Exception):
        UniCTokens(RunContext(cache_dir=cache, tiny=True), "tiny", {"stages": "4"})


def test_face_init_for_people_and_fallback(method, bench):
    import random
    concept = dataclasses.replace(bench.concepts()[0], category="person")
    vec = np.arange(512, dtype=np.float32)
    method.face_embedder = lambda paths: [vec, None, vec + 2]   # one image without a face is skipped
    try:
        init = method.stage2_init(concept, random.Random(0), torch.Generator().manual_seed(0))
        rows = torch.stack([init[17 + i] for i in range(8)])
        assert rows.shape == (8, 64)
        mean = torch.tensor(vec + 1).view(1, 8, 64)
        assert torch.allclose(rows, torch.nn.functional.interpolate(mean, size=64, mode="linear")[0])
        method.face_embedder = lambda paths: [None] * len(paths)
        fallback = method.stage2_init(concept, random.Random(0), torch.Generator().manual_seed(0))
        assert sorted(fallback) == list(range(17, 25))       # the stage-1 (k-means) init instead
    finally:
        method.face_embedder = None


def test_kmeans_is_deterministic_and_finds_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 4, generator=g) * 0.1 + c for c in (0.0, 5.0, -5.0)])
    a = kmeans(x, 3, torch.Generator().manual_seed(1))
    b = kmeans(x, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert sorted(round(float(v)) for v in a.mean(1)) == [-5, 0, 5]


def test_presets_paper_and_code(cache):
    paper = UniCTokens(RunContext(cache_dir=cache), None, {})
    assert paper.preset == "paper"
    c = paper.config
    assert (c.s1_lr, c.s2_lr, c.s3_lr) == (1e-4, 1e-3, 1e-4) and (c.s1_epochs, c.s2_epochs, c.s3_epochs) == (20, 20, 20)
    assert (c.s1_batch, c.s2_batch, c.s3_batch) == (4, 1, 1)
    assert (c.num_shared, c.num_generation, c.num_perception) == (16, 8, 8)
    assert (c.gen_steps, c.guidance) == (50, 5.0)
    code = UniCTokens(RunContext(cache_dir=cache), "code", {}).config
    assert (code.s1_lr, code.s3_lr, code.s2_from_epoch, code.s3_init) == (1e-3, 1e-3, 15, "whitened")


@pytest.mark.slow
def test_unifybench_run_tiny_end_to_end(tmp_path, cache):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", "unictokens", "--preset", "tiny",
                           "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    res = doc["results"]["unifybench-mini"]
    assert {"recognition", "clip_i"} <= set(res)
    assert res["recognition"]["n"] > 0 and res["clip_i"]["n"] > 0
    concepts = [c.name for c in UnifyBenchMini().concepts()]
    assert len(list((out / "concepts").glob("*/stage3.safetensors"))) == len(concepts)
    assert doc["config"]["method"]["name"] == "unictokens" and doc["config"]["method"]["preset"] == "tiny"
    from tiny_answers import text_answers, unreadable
    assert len(text_answers(out)) == 99 and not unreadable(out)      # the tiny Show-o is steered to text
    shutil.rmtree(out)
