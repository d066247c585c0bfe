"""The tiny Chameleon, LLaVA and Show-o, loaded through the real loading path, answer with visible text: the
steering their builders save with the weights keeps greedy decoding off end of turn, specials, image codes,
concept slots and blank or partial-character tokens (models/<family>/tiny.py)."""
import pytest
import torch

QUESTIONS = ["Is this a photo of my dog?", "What color is the toy?", "Describe the object in the picture."]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


def visible(text: str) -> bool:
    return bool(text.strip()) and "\ufffd" not in text and text.strip().isprintable()


def test_tiny_chameleon_answers_readable_text_tokens_only(cache):
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    b = ChameleonBackbone.load(tiny_chameleon_path(cache), device="cpu", dtype=torch.float32)
    first_text = b.token_id("<reserved16299>") + 1
    for q in QUESTIONS:
        ids = torch.tensor([b.chat_ids(None, [b.encode_text(q)])])
        out = b.generate_text(ids, max_new_tokens=8)
        assert len(out) == 8 and min(out) >= first_text, (q, out)         # no stop, special, image or concept id
        assert all(visible(b.decode_text([t])) for t in out) and visible(b.decode_answer(out)), q


def test_tiny_chameleon_concept_slots_sit_far_below_text(cache):
    """The head's bias (residual feature 0) puts every concept slot ~100 logits under the text, so a few tiny
    training steps cannot make a method answer with concept tokens only."""
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    b = ChameleonBackbone.load(tiny_chameleon_path(cache), device="cpu", dtype=torch.float32)
    ids = torch.tensor([b.chat_ids(None, [b.encode_text(QUESTIONS[0])])])
    hidden, _ = b.forward_hidden(ids)
    logits = b.logits(hidden[:, -1])[0]
    slots = [b.token_id(f"<reserved{n:05d}>") for n in range(16200, 16300)]
    text_best = logits[b.token_id("<reserved16299>") + 1:].max()
    assert logits[slots].max() < text_best - 50
    assert logits[[b.eot_id, b.eos_id]].max() < text_best - 50


def test_tiny_llava_answers_text(cache):
    from unifybench.models.llava.backbone import LlavaBackbone
    from unifybench.models.llava.tiny import tiny_llava_path
    b = LlavaBackbone.load(tiny_llava_path(cache), device="cpu", dtype=torch.float32)
    specials = {b.tokenizer.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>", "<pad>", "<image>")}
    for q in QUESTIONS:
        ids = torch.tensor([b.tokenizer(f"USER: {q} ASSISTANT:")["input_ids"]])
        out = b.generate_text(ids, max_new_tokens=8)
        assert len(out) == 8 and not specials & set(out), (q, out)
        assert all(visible(b.tokenizer.decode([t])) for t in out) and visible(b.tokenizer.decode(out)), q


def test_tiny_showo_answers_readable_text_tokens_only(cache):
    from unifybench.models.showo.tiny import load_tiny_showo
    b = load_tiny_showo(cache)
    for q in QUESTIONS:
        out = b.generate_text(torch.tensor([b.chat_ids(None, [q])]), max_new_tokens=8)
        assert len(out) == 8 and max(out) < b.llm_vocab_size and b.eot_id not in out, (q, out)
        assert all(visible(b.decode_text([t])) for t in out) and visible(b.decode_text(out)), q
