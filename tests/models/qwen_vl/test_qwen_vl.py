"""Qwen2.5-VL + text prompt (`qwen25vl-tp`) on the tiny random Qwen2.5-VL: checkpoint, prompt, budget, CLI."""
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from unifybench.baselines.common import QwenVLRunner
from unifybench.errors import UserError
from unifybench.methods.base import RunContext
from unifybench.models.qwen_vl.backbone import DEFAULT_ID, QwenVLBackbone
from unifybench.models.qwen_vl.tiny import tiny_qwen_vl_path
from unifybench.registry import BASELINES, get_runnable

QUESTION = "Is <dog> in this photo?"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def path(cache):
    before = torch.random.get_rng_state()
    p = tiny_qwen_vl_path(cache)
    assert torch.equal(torch.random.get_rng_state(), before)      # the build leaves the caller's RNG alone
    return p


@pytest.fixture(scope="module")
def backbone(path):
    return QwenVLBackbone.load(path)


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_tiny_checkpoint_is_a_real_qwen25vl_folder(path, backbone, tmp_path):
    from safetensors import safe_open
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_5_vl" and cfg["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert cfg["vision_config"]["model_type"] == "qwen2_5_vl_vision" and cfg["vision_config"]["depth"] == 2
    assert cfg["text_config"]["model_type"] == "qwen2_5_vl_text"
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor" and pre["patch_size"] == 14 and pre["merge_size"] == 2
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"
    assert (path / "tokenizer.json").exists() and (path / "model.safetensors").exists()
    assert tiny_qwen_vl_path(path.parent.parent) == path                      # built once, reused
    # loaded through the stock classes, frozen, and bit-identical to the saved tensors
    assert isinstance(backbone.model, Qwen2_5_VLForConditionalGeneration) and not backbone.model.training
    assert isinstance(backbone.processor, Qwen2_5_VLProcessor)
    assert isinstance(backbone.processor.image_processor, Qwen2VLImageProcessor)
    assert isinstance(backbone.tokenizer, Qwen2Tokenizer)
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert backbone.weight_files() == [path / "model.safetensors"]
    state = backbone.model.state_dict()
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:   # the hub's key layout
        keys = list(f.keys())
        assert {k.split(".")[0] for k in keys} == {"model", "visual"} and "visual.blocks.1.attn.qkv.weight" in keys
        for k in keys:
            name = "model." + k if k.startswith("visual.") else "model.language_model." + k[len("model."):]
            assert torch.equal(state[name], f.get_tensor(k)), k
    assert backbone.model.lm_head.weight is backbone.model.model.language_model.embed_tokens.weight   # tied (3B)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(UserError, match="expected 'qwen2_5_vl'"):
        QwenVLBackbone.load(tmp_path / "bad")
    with pytest.raises(UserError, match="not found locally"):
        QwenVLBackbone.load(tmp_path / "missing")


def test_special_tokens_follow_qwen(backbone):
    tok = backbone.tokenizer
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    ids = tok.convert_tokens_to_ids(names)
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and min(ids) >= 256   # after the byte-level vocab
    for name, i in zip(names, ids):
        assert enc(tok, f"a{name}b") == enc(tok, "a") + [i] + enc(tok, "b")      # one special token each
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    assert backbone.image_token_id == ids[5] and ids[2] in backbone.stop_ids and ids[0] in backbone.stop_ids
    text = "Ein Bär mit Schal, 3 Äpfel!\n  und  mehr."
    assert tok.decode(enc(tok, text)) == text                                   # byte-level BPE round-trips


def test_chat_prompt_has_the_exact_qwen_structure(backbone):
    tok = backbone.tokenizer
    sp = {n: tok.convert_tokens_to_ids(n) for n in
          ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]}
    wide, small = Image.new("RGB", (640, 480), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))
    batch = backbone.inputs(QUESTION, [wide, small])
    # 640x480 -> 56x84 px (<= 84*84 px, multiples of 28) -> 4x6 patches -> 6 merged tokens; 64x64 -> 56x56 -> 4
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6], [1, 4, 4]]
    assert batch["pixel_values"].shape == (24 + 16, 3 * 2 * 14 * 14)

    def image(n):
        return [sp["<|vision_start|>"]] + [sp["<|image_pad|>"]] * n + [sp["<|vision_end|>"]]
    expected = ([sp["<|im_start|>"]] + enc(tok, "system\nYou are a helpful assistant.") + [sp["<|im_end|>"]]
                + enc(tok, "\n") + [sp["<|im_start|>"]] + enc(tok, "user\n") + image(6) + image(4)
                + enc(tok, QUESTION) + [sp["<|im_end|>"]] + enc(tok, "\n")
                + [sp["<|im_start|>"]] + enc(tok, "assistant\n"))
    assert batch["input_ids"][0].tolist() == expected
    text_only = backbone.inputs(QUESTION, [])["input_ids"][0].tolist()
    assert sp["<|vision_start|>"] not in text_only and "pixel_values" not in backbone.inputs(QUESTION, [])
    with pytest.raises(UserError, match="placeholder"):
        backbone.inputs("a <|image_pad|> b", [])


def test_greedy_answer_is_the_new_tokens_and_sees_the_image(backbone):
    red, blue = Image.new("RGB", (64, 64), (220, 10, 10)), Image.new("RGB", (64, 64), (10, 10, 220))
    new = backbone.generate_ids(QUESTION, [red], max_new_tokens=4)
    assert 0 < len(new) <= 4 and backbone.image_token_id not in new
    assert backbone.answer(QUESTION, [red], max_new_tokens=4) == backbone.decode(new)
    assert new == backbone.generate_ids(QUESTION, [red], max_new_tokens=4)             # deterministic
    with torch.no_grad():   # the first new token is the argmax of one uncached forward over the prompt
        logits = {}
        for name, im in (("red", red), ("blue", blue)):
            batch = backbone.inputs(QUESTION, [im])
            logits[name] = backbone.model(**batch).logits[0, -1].float()
    scores = logits["red"].clone()
    scores[[backbone.image_token_id, backbone.video_token_id]] = float("-inf")
    assert new[0] == int(scores.argmax())
    assert not torch.allclose(logits["red"], logits["blue"])                        # the pixels reach the answer
    assert backbone.answer(QUESTION, [red], max_new_tokens=0) == ""


def test_runner_truncates_in_the_qwen_tokenizer_and_reads_images(cache, path, tmp_path):
    runner = QwenVLRunner(RunContext(cache_dir=cache, tiny=True), "tiny")
    assert runner.kind == "qwen" and runner.files() == [path / "model.safetensors"]
    tok = runner.backbone.tokenizer
    text = ("<dog> is a small brown dog with a red collar 🐕 and floppy ears; Bär-like fur, "
            "it likes to play with a yellow ball in the park.")
    full = len(enc(tok, text))
    assert runner.count_tokens(text) == full and full > 20
    for n in (1, 5, 12, 20, full - 1):
        cut = runner.truncate(text, n)
        assert len(enc(tok, cut)) <= n and cut and text.startswith(cut.rstrip("\ufffd").strip())
    assert runner.truncate(text, full) == text
    good = tmp_path / "good.png"
    Image.new("RGB", (50, 40), (0, 128, 0)).save(good)
    answer = runner.answer(["A note.\n", QUESTION, good], max_new_tokens=3)
    assert isinstance(answer, str)
    assert answer == runner.backbone.answer("A note.\n" + QUESTION, [Image.open(good).convert("RGB")], 3)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match="broken.jpg"):
        runner.answer([QUESTION, bad], max_new_tokens=2)


def test_baseline_presets_roles_and_captioner(cache, path, tmp_path, monkeypatch):
    from unifybench.data.unifybench import UnifyBenchMini
    cls = BASELINES.get("qwen25vl-tp")
    assert cls is get_runnable("qwen25vl-tp") and cls.name == "qwen25vl-tp"
    assert set(cls.tasks) == {"rec", "vqa", "text_qa", "mc"}
    paper, table2 = cls.build_config("paper", {}), cls.build_config("table2", {})
    assert paper.backbone == table2.backbone == DEFAULT_ID == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert (paper.token_budget, table2.token_budget) == (100, 32) and paper.captioner == "self"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))     # nothing cached, nothing downloaded
    with pytest.raises(UserError, match="not found locally"):
        cls(RunContext(cache_dir=cache), "paper", {}).setup()
    # `--model qwen=PATH` wins over the preset's checkpoint
    link = tmp_path / "my-qwen"
    link.symlink_to(path, target_is_directory=True)
    m = cls(RunContext(cache_dir=cache, models={"qwen": str(link)}), "table2", {})
    m.setup()
    assert m.runner.backbone.path == link and m.config.token_budget == 32
    # the `qwen` captioner for another baseline (LLaVA answers, Qwen captions), and `llava` still works here
    bench = UnifyBenchMini()
    concept = bench.concepts()[0]
    lt = get_runnable("llava-tp")(RunContext(cache_dir=cache, tiny=True), "tiny", {"captioner": "qwen"})
    lt.setup()
    assert lt._captioner.kind == "qwen" and "captioner_qwen/model.safetensors" in lt.model_files()
    doc = json.loads(lt.fit(concept, bench, tmp_path).read_text())
    assert doc["key"]["captioner"].startswith("qwen:") and len(doc["captions"]) == 2
    q = cls(RunContext(cache_dir=cache, tiny=True), "tiny", {"captioner": "llava"})
    q.setup()
    assert q._captioner.kind == "llava" and set(q.model_files()) >= {"qwen/model.safetensors",
                                                                     "captioner_llava/model.safetensors"}
    with pytest.raises(UserError, match="qwen"):
        cls(RunContext(cache_dir=cache, tiny=True), "tiny", {"captioner": "nope"}).setup()


def run_cli(cache, out, *extra):
    return subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", "qwen25vl-tp", "--preset", "tiny",
                           "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress", *extra],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_cli_run_end_to_end_and_same_seed_same_answers(cache, path, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        proc = run_cli(cache, out)
        assert proc.returncode == 0, proc.stderr
    doc = json.loads((a / "results.json").read_text())
    assert doc["tiny"] is True and doc["config"]["method"]["name"] == "qwen25vl-tp"
    assert list(doc["models"]) == ["qwen/model.safetensors"]
    assert len(doc["models"]["qwen/model.safetensors"]["sha256"]) == 64
    res = doc["results"]["unifybench-mini"]
    rec = res["recognition"]
    assert rec["n"] == 64 and rec["n_failed"] == 0 and len(rec["per_concept"]) == 4
    assert "clip_i" not in res                                      # understanding only: no images drawn
    rows = [json.loads(line) for line in (a / "samples" / "recognition.jsonl").read_text().splitlines()]
    assert len(rows) == 64 and all(isinstance(r["answer"], str) and r["tiny_model"] for r in rows)
    assert len({r["answer"] for r in rows}) > 1                     # answers depend on the query photo
    tp = json.loads((a / "concepts" / "dog" / "text_prompt.json").read_text())
    assert tp["description"].startswith("<dog>") and len(tp["captions"]) == 2
    # same seed, same everything
    assert json.loads((b / "results.json").read_text())["results"] == doc["results"]
    for f in (a / "samples").glob("*.jsonl"):
        assert f.read_text() == (b / "samples" / f.name).read_text()
    for f in (a / "concepts").glob("*/predictions.jsonl"):
        assert f.read_text() == (b / f.relative_to(a)).read_text()
