"""RAP-MLLM baseline: the database, retrieval by name and by image, and the interleaved RAP-LLaVA prompt."""
import json
from pathlib import Path

import pytest
import torch

from unifybench.baselines.rap import Entry, rap_query
from unifybench.data.schema import REC, TEXT_QA, VQA
from unifybench.errors import UserError
from unifybench.images import open_rgb
from unifybench.methods.base import RunContext
from unifybench.registry import get_runnable



@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def make(cache, **overrides):
    m = get_runnable("rap-llava")(RunContext(cache_dir=cache, tiny=True), "tiny", overrides)
    m.setup()
    return m


def test_the_rap_prompt_as_the_released_scripts_write_it():
    bo = Entry("bo", "<bo>", Path("bo.png"), "<bo> is a shiba inu.")
    mam = Entry("mam", "<mam>", Path("mam.png"), "<mam> is a cat.")
    assert rap_query("Is <bo> in this photo?", [bo, mam], with_image=True) == (
        "<image>\n[1.<image>\n Name: <bo>, Info: <bo> is a shiba inu.\n"
        "2.<image>\n Name: <mam>, Info: <mam> is a cat.\n]Is <bo> in this photo?")
    assert rap_query("What does <bo> like?", [bo], with_image=False) == (
        "1.<image>\n Name: <bo>, Info: <bo> is a shiba inu.\nWhat does <bo> like?")
    assert rap_query("Hi?", [], with_image=True) == "<image>\n[]Hi?"


def test_database_and_retrieval_by_name(cache, bench, tmp_path):
    m = make(cache)
    concept = bench.concepts()[0]
    doc = json.loads(m.fit(concept, bench, tmp_path).read_text())
    assert [d["tag"] for d in doc] == [c.name for c in bench.concepts()]       # every concept of the benchmark
    assert doc[0]["image"] == str(concept.train_images[0])
    assert doc[0]["info"] == concept.info.replace("<sks>", f"<{concept.name}>")
    m.load_artifact(concept, tmp_path / "rap_database.json")
    names = [c.name for c in bench.concepts()]
    assert [e.tag for e in m.retrieve(f"Is <{names[1]}> in this photo?", None)] == [names[1]]
    both = m.retrieve(f"Is <{names[2]}> next to <{names[0]}>?", None)
    assert [e.tag for e in both] == [names[0], names[2]]                      # database order, as the scripts
    assert m.retrieve("Is anything here?", Path(concept.test_images[0])) == []  # name retrieval ignores the photo


def test_image_retrieval_adds_the_nearest_photos_up_to_top_k(cache, bench, tmp_path):
    m = make(cache, retrieval="image", top_k=2)
    concept = bench.concepts()[1]
    m.load_artifact(concept, m.fit(concept, bench, tmp_path))
    query = Path(bench.concepts()[2].test_images[0])
    found = m.retrieve(f"Is <{concept.name}> in this photo?", query)
    assert len(found) == 2 and found[0].tag == concept.name
    # Independently: the cosine of every other database photo to the query, with the same CLIP.
    clip = m._retrieval_clip()
    others = [e for e in m.database if e.tag != concept.name]
    emb = torch.nn.functional.normalize(clip.encode_images([open_rgb(e.image) for e in others]).float(), dim=-1)
    q = torch.nn.functional.normalize(clip.encode_images([open_rgb(query)]).float(), dim=-1)[0]
    assert found[1] == others[int((emb @ q).argmax())]
    assert "retrieval_clip/" in " ".join(m.model_files())                   # its weights are hashed too
    with pytest.raises(UserError, match="retrieval"):
        make(cache, retrieval="detector")


def test_predict_puts_the_query_photo_first_then_the_retrieved_photos(cache, bench, tmp_path, monkeypatch):
    m = make(cache)
    concept = bench.concepts()[3]
    m.load_artifact(concept, m.fit(concept, bench, tmp_path))
    b = m.backbone
    calls = []
    real = b.generate_text

    def spy(ids, max_new_tokens, pixel_values=None):
        calls.append((ids[0].tolist(), None if pixel_values is None else pixel_values.shape[0]))
        return real(ids, max_new_tokens, pixel_values=pixel_values)
    monkeypatch.setattr(b, "generate_text", spy)
    items = [next(i for i in bench.items(concept) if i.task == t) for t in (REC, VQA, TEXT_QA)]
    preds = m.predict(concept, items, tmp_path)
    assert [p.task for p in preds] == [REC, VQA, TEXT_QA] and all(isinstance(p.text, str) for p in preds)
    per_image = b.image_seq_length
    for (ids, n_px), n_photos in zip(calls, (2, 2, 1)):                       # query + entry; entry only
        assert n_px == n_photos and ids.count(b.image_token_id) == n_photos * per_image
    text = b.tokenizer.decode([t for t in calls[2][0] if t != b.image_token_id])
    assert f"Name: <{concept.name}>" in text and text.rstrip().endswith("ASSISTANT:")
    assert m.predict(concept, items, tmp_path) == preds                      # greedy: the same answers again
