"""MMLU through lm-eval on the tiny Chameleon, base and with concept tokens, plain and with the prompt.

lm-eval really runs (offline, a task YAML over local files); its per-question loglikelihoods and its
accuracy are checked against the same computation done here straight from `backbone.logits`.
"""
import json
import os

import pytest
import torch

from unifybench.models.contract import Backbone

from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting.mmlu import MMLU
from unifybench.evaluators.forgetting.mmlu_yochameleon import YoChameleonMMLU, options_text

from forgetting_fixture import write_mmlu  # noqa: E402


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    path = tiny_chameleon_path(tmp_path_factory.mktemp("tiny"))
    return ChameleonBackbone.load(path, require_decoder=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mmlu(tmp_path_factory.mktemp("mmlu"))


def concept_tokens(backbone, seed=1):
    from unifybench.models.concept_tokens import ConceptTokens
    names = ["<reserved16200>", "<reserved16201>", "<reserved16202>"]
    ids = [backbone.token_id(n) for n in names]
    tokens = ConceptTokens.from_base(backbone.input_embeddings(), backbone.output_head(), ids, ids, names)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tokens.embed.add_(torch.randn(tokens.embed.shape, generator=g))
        tokens.head.add_(torch.randn(tokens.head.shape, generator=g))
    return tokens, ids


def independent(backbone, docs, prefix=None):
    """Per question: log P(" X" | prompt) for X in A-D, from one unbatched forward each."""
    tok = backbone.tokenizer
    banned = backbone.image_token_ids.tolist() + [backbone.boi_id, backbone.eoi_id]
    out = []
    for subject, doc in docs:
        ctx = (f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
               f"{doc['question'].strip()}\n" + "".join(f"{l}. {c}\n" for l, c in zip("ABCD", doc["choices"]))
               + "Answer:")
        if prefix:
            ctx = " " + ctx
        lls = []
        for letter in "ABCD":
            c_ids = tok.encode(ctx, add_special_tokens=False)
            whole = tok.encode(ctx + " " + letter, add_special_tokens=False)
            assert whole[:len(c_ids)] == c_ids
            cont = whole[len(c_ids):]
            seq = [backbone.bos_id] + list(prefix or []) + whole
            with torch.no_grad():
                hidden, _ = backbone.forward_hidden(torch.tensor([seq]))
                logits = backbone.logits(hidden[0]).float()
            logits[:, banned] = float("-inf")
            logp = logits.log_softmax(-1)
            start = len(seq) - len(cont)
            lls.append(sum(float(logp[start - 1 + i, t]) for i, t in enumerate(cont)))
        out.append(lls)
    return out


def docs_of(data):
    import json
    docs = []
    for subject in ("abstract_algebra", "anatomy"):
        for line in (data / subject / "test.jsonl").read_text().splitlines():
            docs.append((subject, json.loads(line)))
    return docs


def check(result, expected, docs):
    samples = {(s["subject"], s["doc_id"]): s for s in result["samples"]}
    assert len(samples) == len(docs) == result["n"]
    right = 0
    by_subject = {}
    for k, ((subject, doc), lls) in enumerate(zip(docs, expected)):
        s = samples[(subject, k % 4)]
        assert s["target"] == doc["answer"]
        assert s["loglikelihoods"] == pytest.approx(lls, abs=2e-4)
        hit = max(range(4), key=lambda i: lls[i]) == doc["answer"]
        right += hit
        by_subject.setdefault(subject, []).append(hit)
        assert s["score"] == float(hit)
    assert result["value"] == pytest.approx(right / len(docs))      # lm-eval's acc, weighted by size
    for subject, hits in by_subject.items():
        assert result["per_subject"][subject]["accuracy"] == pytest.approx(sum(hits) / len(hits))


def test_lm_eval_mmlu_matches_independent_loglikelihoods(backbone, data, tmp_path, monkeypatch):
    from unifybench.models.concept_tokens import attach, detach
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    ev = MMLU(data=str(data), batch_size=3)   # batches of mixed lengths: padding must not leak
    ctx = EvalContext(run_dir=tmp_path, cache_dir=tmp_path / "cache")
    docs = docs_of(data)

    detach(backbone)
    base = ev.evaluate_model(backbone, None, ctx)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"  # set by the code
    check(base, independent(backbone, docs), docs)

    tokens, ids = concept_tokens(backbone)
    attach(backbone, tokens)
    try:
        plain = ev.evaluate_model(backbone, None, ctx)
        prefix = [ids[0]] + backbone.encode_text(" is ") + ids[1:] + backbone.encode_text(".")
        prompted = ev.evaluate_model(backbone, prefix, ctx)
        check(plain, independent(backbone, docs), docs)
        check(prompted, independent(backbone, docs, prefix), docs)
    finally:
        detach(backbone)
    # Without the prompt the new rows act only through the output head (the softmax normaliser); with it the
    # concept embeddings are read, and the loglikelihoods move.
    assert any(a["loglikelihoods"] != pytest.approx(b["loglikelihoods"], abs=1e-3)
               for a, b in zip(base["samples"], prompted["samples"]))
    assert ev.report_metrics(base) == {"accuracy": base["value"]}


def test_parquet_layout_subjects_and_missing_data(tmp_path, monkeypatch):
    root = write_mmlu(tmp_path / "pq", subjects=("abstract_algebra", "anatomy", "virology"), fmt="parquet")
    ev = MMLU(data=str(root), subjects="virology,anatomy")
    assert sorted(p.parent.name for p in ev.data_files()) == ["anatomy", "anatomy", "virology", "virology"]
    with pytest.raises(UserError, match="no subject 'astronomy'"):
        MMLU(data=str(root), subjects="astronomy").data_files()
    monkeypatch.delenv("UNIFYBENCH_MMLU_ROOT", raising=False)
    with pytest.raises(UserError, match="UNIFYBENCH_MMLU_ROOT"):
        MMLU().data_files()
    monkeypatch.setenv("UNIFYBENCH_MMLU_ROOT", str(root))
    assert len(MMLU().data_files()) == 6


def test_yochameleon_replica_is_seeded_and_scores_by_substring(backbone, data, tmp_path):
    assert options_text(["0", "1", "2", "3"]) == "0, 1, 2 or 3?"
    ev = YoChameleonMMLU(data=str(data), max_new_tokens=6)
    ctx = EvalContext(run_dir=tmp_path, seed=3)
    a = ev.evaluate_model(backbone, None, ctx)
    b = ev.evaluate_model(backbone, None, ctx)
    assert a["samples"] == b["samples"] and a["n"] == 4
    for s in a["samples"]:
        assert s["score"] == float(s["gold"] in s["answer"])
    assert a["value"] == pytest.approx(sum(s["score"] for s in a["samples"]) / 4)
    assert ev.report_metrics(a) == {"accuracy (substring)": a["value"]}


def test_transformers_causal_lm_goes_through_hflm(backbone, data, tmp_path):
    """A plain transformers causal LM (the contract's `has_hidden` False) runs through lm-eval's own HFLM."""
    from unifybench.models.contract import Backbone

    from transformers import LlamaConfig, LlamaForCausalLM
    tok = backbone.tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                             pad_token_id=tok.pad_token_id)).eval()
    ev = MMLU(data=str(data), subjects="anatomy")
    plain = Backbone()
    plain.model, plain.tokenizer = model, tok
    res = ev.evaluate_model(plain, None,
                            EvalContext(run_dir=tmp_path, cache_dir=tmp_path / "cache"))
    docs = [d for d in docs_of(data) if d[0] == "anatomy"]
    for s, (subject, doc) in zip(sorted(res["samples"], key=lambda s: s["doc_id"]), docs):
        ctx = (f"The following are multiple choice questions (with answers) about anatomy.\n\n"
               f"{doc['question'].strip()}\n" + "".join(f"{l}. {c}\n" for l, c in zip("ABCD", doc["choices"]))
               + "Answer:")
        c_ids = tok.encode(ctx, add_special_tokens=False)
        lls = []
        for letter in "ABCD":
            whole = tok.encode(ctx + " " + letter, add_special_tokens=False)
            with torch.no_grad():
                logp = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
            lls.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(c_ids), len(whole))))
        # HFLM batches with padding (SDPA reduction order): agreement to ~1e-3 here, exact ranking below.
        assert s["loglikelihoods"] == pytest.approx(lls, abs=3e-3)
        assert s["pred"] == max(range(4), key=lambda i: lls[i]) and s["score"] == float(s["pred"] == doc["answer"])


class ScriptedLM(Backbone):
    """One id per character; its logits put the next scripted token far ahead of the rest. Records the prompt.
    Its questions are built by Chameleon's own chat adapter."""
    bos_id, eot_id, eos_id = 1, 2, 3
    has_hidden = True

    def __init__(self, script):
        self.script, self.prompts, self.tokenizer = script, [], self

    def chat_ids(self, prefix_ids, parts):
        from unifybench.models.chameleon.chat import chat_ids
        return chat_ids(self, prefix_ids, parts)

    def encode_text(self, text):
        return [1000 + ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(t - 1000) for t in ids if t >= 1000)

    def forward_hidden(self, ids, past_key_values=None, use_cache=True):
        if past_key_values is None:
            self.prompts.append(ids[0].tolist())
            past_key_values = 0
        else:
            past_key_values += 1
        return torch.full((1, ids.shape[1], 1), float(past_key_values)), past_key_values

    def logits(self, hidden):
        step = int(hidden[0, 0])
        out = torch.zeros(1, 2000)
        out[0, self.script[step] if step < len(self.script) else 1000 + ord("!")] = 1e4
        return out


@pytest.mark.parametrize("segments,answer", [(2, "4 no, 0"), (1, "4 no")])
def test_yochameleon_replica_keeps_text_up_to_the_second_generated_end_of_turn(tmp_path, segments, answer):
    """eval_mmlu.py: decode(prompt + reply).split(eot)[1:3], joined and stripped; the question as stored."""
    root = tmp_path / "mmlu" / "abstract_algebra"
    root.mkdir(parents=True)
    (root / "test.jsonl").write_text(json.dumps({"question": " Find 2+2. ", "choices": ["0", "4", "5", "6"],
                                                 "answer": 2}) + "\n")
    ch = lambda text: [1000 + ord(c) for c in text]  # noqa: E731
    bb = ScriptedLM(ch(" 4 no") + [2] + ch(", 0") + [2] + ch(" and 5") + [3])
    res = YoChameleonMMLU(data=str(tmp_path / "mmlu"), segments=segments).evaluate_model(
        bb, None, EvalContext(run_dir=tmp_path))
    # the text the reference keeps, worked out by hand: " 4 no" + ", 0" -> "4 no, 0"; " and 5" follows the 2nd
    assert res["samples"][0]["answer"] == answer
    assert res["samples"][0]["score"] == 0.0          # gold "5" only came after the second end of turn
    assert bb.prompts == [[1] + ch(" Find 2+2.  0, 4, 5 or 6?") + [2]]
