"""Yo'Chameleon on the tiny Chameleon: what trains, what is saved, what is generated."""
import random

import pytest
import torch

from unifybench.data.schema import GEN, REC
from unifybench.methods.base import RunContext
from unifybench.methods.yochameleon import YoChameleon
from unifybench.models.concept_tokens import ConceptTokens
from unifybench.retrieval import allocate_tokens

from tiny_methods import base_state


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    m = YoChameleon(RunContext(cache_dir=cache, tiny=True), "tiny", {"epochs": 2})
    m.setup()
    return m


@pytest.fixture(scope="module")
def fitted(method, bench, tmp_path_factory):
    """One fit shared by the tests below: (concept, artifact, base state before, base state after)."""
    concept = bench.concepts()[0]
    before = base_state(method)
    torch.manual_seed(0)
    artifact = method.fit(concept, bench, tmp_path_factory.mktemp("fit"))
    return concept, artifact, before, base_state(method)


def test_fit_changes_only_concept_rows_and_loss_falls(method, fitted):
    concept, artifact, before, after = fitted
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"base tensors changed: {changed[:5]}"
    tokens, header = ConceptTokens.load(artifact)
    initial = ConceptTokens.from_base(method.backbone.input_embeddings(), method.backbone.output_head(),
                                      method.token_ids, method.head_ids)
    assert not torch.equal(tokens.embed, initial.embed), "concept rows did not train"
    losses = header["epoch_losses"]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert header["backbone_sha256"] and header["method"] == "yochameleon"
    assert header["samples"]["rec"] > 0 and header["samples"]["gen"] > 0 and header["samples"]["soft_positive"] > 0


def test_artifact_roundtrip_gives_identical_outputs(method, fitted):
    concept, artifact = fitted[:2]
    b = method.backbone
    ids = torch.tensor([[b.bos_id] + method.personalized_prompt() + b.encode_text(" Is it here?")])
    method.load_artifact(concept, artifact)
    with torch.no_grad():
        first = b.logits(b.forward_hidden(ids)[0])
    from unifybench.models.concept_tokens import detach
    detach(b)
    method.load_artifact(concept, artifact)
    with torch.no_grad():
        second = b.logits(b.forward_hidden(ids)[0])
    assert torch.equal(first, second)
    assert torch.equal(first[..., method.token_ids[0]], second[..., method.token_ids[0]])


def test_prompt_layout_and_self_prompting_answers(method, bench):
    k = method.config.num_tokens
    assert len(method.g_ids) == len(method.u_ids) == k and len(set(method.token_ids)) == 2 * k + 1
    prompt = method.personalized_prompt()
    assert prompt[0] == method.token_ids[0]
    assert prompt.index(method.g_ids[0]) < prompt.index(method.u_ids[0])
    samples = method.training_samples(bench.concepts()[0], bench, random.Random(0))
    for s in samples:
        answer = [t for t, sup in zip(s.ids, s.supervised) if sup]
        assert answer[-1] == method.backbone.eot_id
        if s.kind in ("rec", "text_qa"):
            assert answer[:k] == method.u_ids        # understanding answers start with <u1..uk>
        if s.kind == "gen":
            assert answer[:k] == method.g_ids        # images too, with the <g> tokens (paper)
            assert answer.count(method.backbone.boi_id) == 1
            n_codes = answer.index(method.backbone.eoi_id) - answer.index(method.backbone.boi_id) - 1
            assert n_codes == method.backbone.image_seq_length


def test_generation_yields_decodable_1024_token_images(method, bench, fitted, tmp_path):
    concept, artifact = fitted[:2]
    method.load_artifact(concept, artifact)
    items = [i for i in bench.items(concept) if i.task == GEN][:1]
    preds = method.predict(concept, items, tmp_path)
    assert len(preds) == 1 and len(preds[0].images) == method.config.images_per_prompt
    from PIL import Image
    for p in preds[0].images:
        with Image.open(p) as im:
            assert im.size[0] > 0 and im.mode == "RGB"
    b = method.backbone
    prompt = [b.bos_id] + method.personalized_prompt() + b.encode_text(" A photo.") + [b.eot_id]
    codes = b.generate_images(prompt, 2, torch.Generator().manual_seed(1))
    assert codes.shape == (2, 1024)
    assert torch.isin(codes, b.image_token_ids).all()
    assert torch.equal(codes, b.generate_images(prompt, 2, torch.Generator().manual_seed(1)))


def test_recognition_answers_are_text(method, bench, fitted, tmp_path):
    concept, artifact = fitted[:2]
    method.load_artifact(concept, artifact)
    items = [i for i in bench.items(concept) if i.task == REC][:2]
    preds = method.predict(concept, items, tmp_path)
    assert [p.id for p in preds] == [i.id for i in items]
    assert all(isinstance(p.text, str) for p in preds)


def test_allocate_tokens_gives_more_tokens_to_more_similar_ranks():
    assert allocate_tokens(1000, 16)[:67] == [15] * 67          # 1000 = 10 chunks of 67 + 5 of 66
    assert allocate_tokens(1000, 16)[-66:] == [1] * 66
    assert len(allocate_tokens(1000, 16)) == 1000
    t = allocate_tokens(6, 16)
    assert t == sorted(t, reverse=True) and t[0] == 15
