"""Yo'LLaVA on the tiny LLaVA: what trains, what is saved, what the training data looks like."""
import random

import pytest
import torch

from unifybench.data.schema import REC, TEXT_QA, VQA
from unifybench.errors import UserError
from unifybench.methods.base import RunContext
from unifybench.methods.yollava import YoLLaVA
from unifybench.models.concept_tokens import ConceptTokens, detach

from tiny_methods import base_state


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def method(cache):
    m = YoLLaVA(RunContext(cache_dir=cache, tiny=True), "tiny", {"epochs": 3})
    m.setup()
    return m


@pytest.fixture(scope="module")
def fitted(method, bench, tmp_path_factory):
    concept = bench.concepts()[0]
    before = base_state(method)
    torch.manual_seed(0)
    artifact = method.fit(concept, bench, tmp_path_factory.mktemp("fit"))
    return concept, artifact, before, base_state(method)


def test_defaults_are_the_papers():
    cfg = YoLLaVA.build_config("paper", {})
    assert (cfg.num_tokens, cfg.lr, cfg.epochs, cfg.batch_size, cfg.head_rows) == (16, 1e-3, 15, 1, "identifier")
    assert cfg.backbone == "llava-hf/llava-1.5-13b-hf"
    assert YoLLaVA.build_config("code", {}).head_rows == "all"
    assert YoLLaVA.build_config("phi", {}).language_model == "phi"


def test_only_concept_rows_change_loss_falls_identifier_head_only(method, fitted):
    concept, artifact, before, after = fitted
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"base tensors changed: {changed[:5]}"
    tokens, header = ConceptTokens.load(artifact)
    assert tokens.token_ids.tolist() == method.token_ids and len(method.token_ids) == 17
    assert tokens.head_ids.tolist() == [method.sks] and tokens.head.shape[0] == 1   # the paper: identifier only
    initial = ConceptTokens.from_base(method.backbone.input_embeddings(), method.backbone.output_head(),
                                      method.token_ids, method.head_ids)
    assert not torch.equal(tokens.embed, initial.embed) and not torch.equal(tokens.head, initial.head)
    losses = header["epoch_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert header["method"] == "yollava" and header["backbone_sha256"]
    s = header["samples"]
    assert s["rec_positive"] == 6 and s["rec_negative"] == 3 and s["rec_random"] == 3 and s["text_qa"] > 0


def test_save_load_gives_identical_outputs(method, fitted):
    concept, artifact = fitted[:2]
    b = method.backbone
    ids = torch.tensor([method.prompt_ids("Is <sks> here?", False)])
    method.load_artifact(concept, artifact)
    with torch.no_grad():
        first = b.logits(b.forward_hidden(ids)[0])
    detach(b)
    method.load_artifact(concept, artifact)
    with torch.no_grad():
        second = b.logits(b.forward_hidden(ids)[0])
    assert torch.equal(first, second)


def test_training_samples_layout(method, bench):
    concept = bench.concepts()[0]
    samples = method.training_samples(concept, bench, random.Random(0))
    b = method.backbone
    prompt_ids = b.encode_text(method.personalized_prompt())
    assert method.personalized_prompt() == "<sks> is " + "".join(f"<token{i}>" for i in range(16)) + "."
    for s in samples:
        answer = [t for t, sup in zip(s.ids, s.supervised) if sup]
        assert answer[-1] == b.eos_id and answer                     # loss on the answer (+ </s>) only
        first_answer = s.supervised.index(True)
        assert b.image_token_id not in s.ids[first_answer:]
        n_img = s.ids.count(b.image_token_id)
        if s.kind == "text_qa":
            assert n_img == 0 and s.image is None                    # text-only QA: no image
        else:
            assert n_img == b.image_seq_length and s.image is not None
        # the personalized prompt sits in the user turn, after the image
        start = next(i for i in range(len(s.ids)) if s.ids[i:i + len(prompt_ids)] == prompt_ids)
        assert start < first_answer
    # hard negatives: the pool images most similar to the training photos, never the concept's own photos
    hard = [s.image for s in samples if s.kind == "rec_negative"]
    own = set(concept.train_images) | set(concept.test_images)
    assert hard and not (set(hard) & own)


def test_code_preset_trains_all_head_rows(method, cache, bench, tmp_path):
    m = YoLLaVA(RunContext(cache_dir=cache, tiny=True), "tiny",
                {"head_rows": "all", "epochs": 1, "n_recognition_positives": 2, "n_hard_negatives": 0,
                 "n_random_negatives": 1})
    m.setup()
    artifact = m.fit(bench.concepts()[1], bench, tmp_path)
    tokens, _ = ConceptTokens.load(artifact)
    assert tokens.head_ids.tolist() == m.token_ids
    with pytest.raises(UserError, match="do not fit"):   # an all-rows artifact into the identifier-only setup
        method.load_artifact(bench.concepts()[1], artifact)
    with pytest.raises(UserError):
        YoLLaVA.build_config("nope", {})


def test_predictions_are_text_for_every_understanding_task(method, bench, fitted, tmp_path):
    concept, artifact = fitted[:2]
    method.load_artifact(concept, artifact)
    items = bench.items(concept)
    picked = [next(i for i in items if i.task == t) for t in (REC, VQA, TEXT_QA)]
    preds = method.predict(concept, picked + [i for i in items if i.task == "gen"][:1], tmp_path)
    assert [p.id for p in preds] == [i.id for i in picked]              # no image generation in LLaVA
    assert all(isinstance(p.text, str) and p.error is None for p in preds)


@pytest.mark.slow
def test_cli_run_tiny_end_to_end(tmp_path, cache):
    import json
    import subprocess
    import sys
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", "yollava", "--preset", "tiny",
                           "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "results.json").read_text())
    res = doc["results"]["unifybench-mini"]
    assert doc["config"]["method"]["name"] == "yollava" and doc["tiny"] is True
    assert res["recognition"]["n"] == 64 and res["recognition"]["n_failed"] == 0
    assert "bleu" in res and "clip_i" not in res                      # LLaVA does not generate images
    assert any(k.startswith("llava/") for k in doc["models"]) and any(k.startswith("retrieval_clip/") for k in doc["models"])
    assert len(list((out / "concepts").glob("*/concept_tokens.safetensors"))) == 4
    from tiny_answers import text_answers, unreadable
    assert len(text_answers(out)) == 99 and not unreadable(out)      # the tiny LLaVA is steered to text
