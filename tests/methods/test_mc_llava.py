"""MC-LLaVA on the tiny LLaVA-NeXT: joint training per scenario touches only the concept rows (base weights
bit-identical), the k-means initialisation (hand properties: centroid norms, identifier = their mean, head rows
untouched), whole photos labelled without masks, the prompt defines every concept, the visual prompt's marks,
the LLaVA-1.5 setting, and end-to-end runs on the mini benchmark and the mc-llava fixture."""
import subprocess
import sys

import pytest
import torch
from PIL import Image

from unifybench.methods.base import RunContext
from unifybench.methods.mc_llava import MCLLaVA, MCLLaVAConfig
from unifybench.models.concept_tokens import ConceptTokens

from mc_llava_fixture import write_mc_llava  # noqa: E402
from tiny_methods import base_state  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mc_bench(tmp_path_factory):
    from unifybench.data.mc_llava import MCLLaVA as Bench
    return Bench(write_mc_llava(tmp_path_factory.mktemp("mcdata")))


@pytest.fixture(scope="module")
def method(cache):
    m = MCLLaVA(RunContext(cache_dir=cache, tiny=True), "tiny")
    m.setup()
    return m


def test_defaults_are_the_papers():
    cfg = MCLLaVA.build_config("paper", {})
    assert (cfg.num_tokens, cfg.lr, cfg.batch_size, cfg.epochs, cfg.weight_decay) == (16, 1e-3, 1, 15, 1e-6)
    assert (cfg.base_model, cfg.backbone, cfg.init, cfg.visual_prompt) == ("llava-1.6", "13b", "kmeans", False)
    assert MCLLaVA.build_config("llava-1.5", {}).base_model == "llava-1.5"
    assert MCLLaVAConfig().conversations and MCLLaVAConfig().positives_per_image == 5


def test_joint_fit_trains_only_concept_rows(method, mc_bench, tmp_path):
    yu = mc_bench.concept("Yu")
    before = base_state(method)
    artifact = method.fit(yu, mc_bench, tmp_path / "yu")
    after = base_state(method)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    tokens, header = ConceptTokens.load(artifact)
    k = method.config.num_tokens
    assert header["scenario"] == ["Alex", "Yu"] and tokens.embed.shape[0] == 2 * (k + 1)
    assert tokens.head_ids.tolist() == tokens.token_ids.tolist()         # embedding and head rows of all
    assert header["init_features"] == "Alex: masks, Yu: masks"
    assert header["samples"]["rec_joint_negative"] > 0 and header["samples"]["text_qa"] == 4
    # the scenario's other concept gets the same rows (trained once, not twice)
    again, _ = ConceptTokens.load(method.fit(mc_bench.concept("Alex"), mc_bench, tmp_path / "alex"))
    assert torch.equal(again.embed, tokens.embed) and torch.equal(again.head, tokens.head)


def test_kmeans_init_properties(cache, mc_bench, tmp_path):
    m = MCLLaVA(RunContext(cache_dir=cache, tiny=True), "tiny", {"epochs": 0})
    m.setup()
    tokens, header = ConceptTokens.load(m.fit(mc_bench.concept("Ann"), mc_bench, tmp_path))
    base = m.backbone.input_embeddings().weight.detach().float()
    target = base.norm(dim=1).mean()
    k = m.config.num_tokens
    for i in range(3):
        latent = tokens.embed[i * (k + 1) + 1:(i + 1) * (k + 1)]
        assert torch.allclose(latent.norm(dim=1), target.expand(k), rtol=1e-5)
        assert torch.allclose(tokens.embed[i * (k + 1)], latent.mean(0), atol=1e-6)
    initial = ConceptTokens.from_base(m.backbone.input_embeddings(), m.backbone.output_head(),
                                      tokens.token_ids.tolist(), tokens.head_ids.tolist())
    assert torch.equal(tokens.head, initial.head)                         # head rows keep the random draw


def test_mask_patches_follow_the_mask(method, tmp_path):
    v = method.vision
    mask = Image.new("L", (v.size, v.size), 0)
    mask.paste(255, (0, 0, v.size // 2, v.size))                         # left half foreground
    mask.save(tmp_path / "m.png")
    grid = v._mask_patches(tmp_path / "m.png").view(v.grid, v.grid)
    assert grid[:, :v.grid // 2].all() and not grid[:, v.grid // 2:].any()
    Image.new("L", (v.size, v.size), 1).save(tmp_path / "ones.png")        # a 0/1 mask is foreground too
    assert v._mask_patches(tmp_path / "ones.png").all()


def test_whole_photo_without_masks_is_labelled(cache, bench, tmp_path):
    m = MCLLaVA(RunContext(cache_dir=cache, tiny=True), "tiny", {"epochs": 1})
    m.setup()
    _, header = ConceptTokens.load(m.fit(bench.concepts()[0], bench, tmp_path))
    assert header["init_features"].endswith("whole photo (no masks)") and header["scenario"] == ["dog"]


def test_system_prompt_defines_every_concept(method):
    text = method._system(["Ann", "Ben", "Yuki"], {"Ben": 2})
    assert "<id0> is <token0><token1><token2><token3>.<id1> is <token4>" in text and "<id2> is" in text
    assert text.endswith("<id1> is located at 'Mark Number 2'.")
    assert method._text("Is <sks> left of <Yuki>?", "Ben", ["Ann", "Ben", "Yuki"]) == "Is <id1> left of <id2>?"


def test_marks_at_peaks_with_the_threshold():
    from unifybench.methods.mc_llava_vision import draw_marks, place_marks
    peak = torch.zeros(20, 30)
    peak[4, 7] = 0.9
    peak[4, 8] = 0.5
    flat = torch.full((20, 30), 0.3)                                     # never above TAU = 0.318
    assert place_marks([peak, flat], 0.318, 1 / 600) == [(7, 4), None]   # 2/600 pixels above: marked
    assert place_marks([peak], 0.318, 2 / 600) == [None]                 # not more than gamma
    img = Image.new("RGB", (30, 30), (128, 128, 128))                    # square images are marked too
    out = draw_marks(img, [(15, 2)], size=10)
    assert out.size == img.size and out.getpixel((15, 4)) != (128, 128, 128)


def test_llava_15_setting_fits(cache, bench, tmp_path):
    m = MCLLaVA(RunContext(cache_dir=cache, tiny=True), "tiny-llava-1.5", {"epochs": 1})
    m.setup()
    assert type(m.backbone.model).__name__ == "LlavaForConditionalGeneration"
    _, header = ConceptTokens.load(m.fit(bench.concepts()[1], bench, tmp_path))
    assert len(header["epoch_losses"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mini", "mc-llava"])
def test_cli_run_end_to_end_fills_the_table_rows(where, cache, mc_bench, tmp_path):
    """A tiny run on the mini benchmark fills Table 1's MC-LLaVA row; one on the fixture (a two- and a
    three-concept scenario, the visual prompt on, the single-concept presets) fills Table 2's MC-LLaVA
    columns."""
    import json

    from unifybench import tables
    from unifybench.resultsfile import load_results
    cmd = [sys.executable, "-m", "unifybench.cli", "run", "--method", "mc-llava", "--preset", "tiny",
           "--output-dir", str(tmp_path / "run"), "--cache-dir", str(cache), "--no-progress"]
    if where == "mini":
        cmd += ["--concepts", "dog", "--eval-preset", "recognition=unictokens", "--eval-preset", "bleu=unictokens"]
    else:
        cmd += ["--benchmark", "mc-llava", "--data-root", str(mc_bench.root), "--concepts", "Yu,Ben",
                "--set", "visual_prompt=true"] + [a for e in ("recognition", "bleu", "mc")
                                                  for a in ("--eval-preset", f"{e}=mc-llava-single")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    bench = "unifybench-mini" if where == "mini" else "mc-llava"
    res = doc["results"][bench]
    assert res["recognition"]["n"] > 0 and res["bleu"]["n"] > 0 and doc["tiny"]
    spec = tables.load_spec("unictokens_table1" if where == "mini" else "unictokens_table2_understanding")
    table = tables.build_table(spec, [load_results(tmp_path / "run")])
    line = [l for l in table.lines if l.kind == "reproduced"]
    assert len(line) == 1 and line[0].row_id == "mc_llava"
    cells = line[0].cells
    if where == "mini":
        assert cells["rec_weight"].full == pytest.approx(res["recognition"]["value"])
        assert cells["vqa_bleu"].full == pytest.approx(res["bleu"]["by_task"]["vqa"]["value"])
    else:
        assert res["caption"]["n"] > 0
        assert (tmp_path / "run" / "concepts" / "Ben" / "visual_prompt_banks.safetensors").is_file()
        # the single-concept portion only: Yu's own and Alex's test images, no multi-concept image
        assert res["recognition"]["per_concept_detail"]["Yu"]["n_positive"] == 2
        assert cells["mcllava_rec_weight"].full == pytest.approx(res["recognition"]["value"])
        assert cells["mcllava_vqa_bleu"].full == pytest.approx(res["bleu"]["by_task"]["vqa"]["value"])
        assert cells["mcllava_qa_acc"].full == pytest.approx(res["mc"]["by_kind"]["text"]["value"])
