"""DreamBooth and Textual Inversion on the tiny random Stable Diffusion: real diffusers code paths, no network."""
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from unifybench.data.schema import GEN, KNOWLEDGE_GEN
from unifybench.errors import UserError
from unifybench.methods.base import RunContext


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")



@pytest.fixture(scope="module")
def concept(bench):
    return bench.concept("dog")


@pytest.fixture(scope="module")
def sd_folder(cache):
    from unifybench.models.stable_diffusion.tiny import tiny_sd_path
    return tiny_sd_path(cache)


def ctx_for(cache, seed=0, **kw):
    return RunContext(cache_dir=cache, tiny=True, seed=seed, **kw)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(module, snapshot):
    now = module.state_dict()
    return now.keys() == snapshot.keys() and all(torch.equal(now[k], snapshot[k]) for k in snapshot)


def gen_items(bench, concept):
    return [i for i in bench.items(concept) if i.task in (GEN, KNOWLEDGE_GEN)]


# --------------------------------------------------------------------------------------------------------
# The tiny checkpoint and the loader
# --------------------------------------------------------------------------------------------------------

def test_tiny_checkpoint_is_a_diffusers_folder_loaded_by_the_real_loader(sd_folder, cache):
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from unifybench.models.stable_diffusion.pipeline import load_sd
    from unifybench.models.stable_diffusion.tiny import tiny_sd_path
    for rel in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                "scheduler/scheduler_config.json"):
        assert (sd_folder / rel).is_file(), rel
    assert not list(sd_folder.rglob("*.bin"))
    index = json.loads((sd_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    stamp = (sd_folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert tiny_sd_path(cache) == sd_folder   # built once
    assert (sd_folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp

    sd = load_sd(sd_folder)
    p = sd.pipe
    assert isinstance(p.unet, UNet2DConditionModel) and isinstance(p.vae, AutoencoderKL)
    assert isinstance(p.text_encoder, CLIPTextModel) and isinstance(p.tokenizer, CLIPTokenizer)
    assert isinstance(p.scheduler, PNDMScheduler) and p.safety_checker is None
    assert p.scheduler.config.beta_schedule == "scaled_linear" and p.scheduler.config.num_train_timesteps == 1000
    # the weights in memory are the file's
    on_disk = load_file(str(sd_folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(on_disk[k], v) for k, v in p.unet.state_dict().items())
    files = sd.model_files()
    assert set(files) == {"sd/unet/diffusion_pytorch_model.safetensors", "sd/vae/diffusion_pytorch_model.safetensors",
                          "sd/text_encoder/model.safetensors"}
    assert all(f.is_file() and f.suffix == ".safetensors" for f in files.values())


def test_tiny_tokenizer_is_clips_bpe(sd_folder):
    """vocab.json + merges.txt derived from open_clip's BPE file tokenize exactly as open_clip's CLIP tokenizer."""
    import open_clip
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(sd_folder, subfolder="tokenizer", local_files_only=True)
    assert len(tok) == 49408 and tok.bos_token_id == 49406 and tok.eos_token_id == 49407
    ref = open_clip.SimpleTokenizer()
    for text in ("a photo of a sks dog in the jungle", "A cube shaped stuffed animal, wet!", "it's 3 o'clock"):
        assert tok(text).input_ids == [49406, *ref.encode(text), 49407]
    assert tok("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]   # CLIP's ids


def test_loader_refuses_missing_and_pickle_only_checkpoints(sd_folder, tmp_path, cache):
    from unifybench.baselines.diffusion import DreamBoothSD
    from unifybench.models.stable_diffusion.pipeline import load_sd
    missing = tmp_path / "no_such_model"
    with pytest.raises(UserError, match="no_such_model"):
        DreamBoothSD(ctx_for(cache, models={"sd": str(missing)})).setup()
    with pytest.raises(UserError, match="model_index.json"):
        load_sd(tmp_path)
    pickled = tmp_path / "bin_only"
    shutil.copytree(sd_folder, pickled)
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").rename(pickled / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UserError, match="safetensors"):
        load_sd(pickled)


def test_prompts_name_the_concept_once(concept, cache):
    from unifybench.baselines.diffusion import DreamBoothSD, TextualInversionSD
    from unifybench.evaluators.clip_text import prompt_text
    from unifybench.prompts import with_class_noun
    assert with_class_noun("a <sks> dog in the jungle", "dog", "sks") == "a sks dog in the jungle"
    assert with_class_noun("<sks> wearing a hat", "dog", "sks") == "sks dog wearing a hat"
    assert prompt_text("a <sks> dog in the jungle", concept) == "a dog in the jungle"
    assert prompt_text("a red <sks>", concept) == "a red dog"
    db = DreamBoothSD(ctx_for(cache), "paper")
    assert db.prompt_for(concept, "a <sks> dog in the jungle") == "a sks dog in the jungle"
    assert db.prompt_for(concept, "A photo of <sks> sleeping.") == "A photo of sks dog sleeping."
    ti = TextualInversionSD(ctx_for(cache), "paper")
    assert ti.prompt_for(concept, "a <sks> dog on the beach") == "a <dog> dog on the beach"
    assert ti.prompt_for(concept, "a red <sks>") == "a red <dog> dog"
    ti.config.class_noun_in_prompt = False
    assert ti.prompt_for(concept, "a red <sks>") == "a red <dog>"
    assert db.config.max_train_steps == 800 and db.config.lr == 5e-6 and db.config.n_train_images == 10
    assert ti.config.lr == 5e-4 and ti.config.grad_accum == 4 and ti.config.scale_lr


# --------------------------------------------------------------------------------------------------------
# DreamBooth
# --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dreambooth(cache, bench, concept, tmp_path_factory):
    from unifybench.baselines.diffusion import DreamBoothSD
    m = DreamBoothSD(ctx_for(cache), "tiny")
    m.setup()
    p = m.sd.pipe
    before = {"unet": state(p.unet), "vae": state(p.vae), "text_encoder": state(p.text_encoder)}
    out = tmp_path_factory.mktemp("db_fit")
    artifact = m.fit(concept, bench, out)
    return m, before, artifact, out


def test_dreambooth_fit_lowers_loss_and_keeps_the_base_model(dreambooth, sd_folder):
    m, before, artifact, _ = dreambooth
    log = json.loads((artifact / "train_log.json").read_text())
    assert len(log["losses"]) == m.config.max_train_steps and log["instance_prompt"] == "a sks dog"
    assert log["eval_loss_after"] < log["eval_loss_before"]
    assert log["n_train_images"] == 3 and log["n_class_images"] == 2
    p = m.sd.pipe
    for name in ("unet", "vae", "text_encoder"):
        assert same_state(getattr(p, name), before[name]), name
    # ... and equal to the checkpoint files
    base = load_file(str(sd_folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(base[k], v) for k, v in p.unet.state_dict().items())
    weights = artifact / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.is_file() and not list(artifact.rglob("*.bin"))
    tuned = load_file(str(weights))
    assert tuned.keys() == base.keys() and any(not torch.equal(tuned[k], base[k]) for k in base)


def test_dreambooth_class_images_are_cached(dreambooth, concept):
    m = dreambooth[0]
    paths = m.class_images("a dog", 2)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert m.class_images("a dog", 1) == paths[:1]
    assert [p.stat().st_mtime_ns for p in paths] == stamps      # not drawn again
    with Image.open(paths[0]) as im:
        assert im.size == (32, 32)
    assert m.class_images("a cat", 1)[0].parent != paths[0].parent   # keyed by the prompt


def test_dreambooth_predict_writes_pngs_and_repeats_bit_for_bit(dreambooth, bench, concept, tmp_path):
    m, _, artifact, _ = dreambooth
    m.load_artifact(concept, artifact)
    assert m._active[1].unet is not m.sd.pipe.unet
    tuned = load_file(str(artifact / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(tuned[k], v) for k, v in m._active[1].unet.state_dict().items())
    items = gen_items(bench, concept)
    saved = dataclasses.replace(m.config)
    m.config.images_per_prompt, m.config.gen_batch_size = 0, 3     # the benchmark's 4 per prompt, 2 calls
    try:
        preds = m.predict(concept, items, tmp_path / "a")
        again = m.predict(concept, items, tmp_path / "b")
    finally:
        m.config = saved
    assert [p.task for p in preds] == [GEN, KNOWLEDGE_GEN]           # gen_prompts_limit=1 per task
    for p, item in zip(preds, [i for i in items if i.task == GEN][:1] + [i for i in items if i.task == KNOWLEDGE_GEN][:1]):
        assert p.id == item.id and len(p.images) == item.n_images == 4
        for f in p.images:
            assert Path(f).is_absolute() and Path(f).parent == (tmp_path / "a" / "images").resolve()
            with Image.open(f) as im:
                assert im.format == "PNG" and im.size == (32, 32)
    for p, q in zip(preds, again):
        assert [Path(f).read_bytes() for f in p.images] == [Path(f).read_bytes() for f in q.images]
    assert len({Path(f).read_bytes() for f in preds[0].images}) == 4   # four different draws


def test_another_seed_draws_other_images(dreambooth, bench, concept, cache, tmp_path):
    from unifybench.baselines.diffusion import DreamBoothSD
    m, _, artifact, _ = dreambooth
    m.load_artifact(concept, artifact)
    a = m.predict(concept, gen_items(bench, concept), tmp_path / "s0")
    other = DreamBoothSD(ctx_for(cache, seed=1), "tiny")
    other.setup()
    other.load_artifact(concept, artifact)
    b = other.predict(concept, gen_items(bench, concept), tmp_path / "s1")
    assert Path(a[0].images[0]).read_bytes() != Path(b[0].images[0]).read_bytes()


def test_dreambooth_text_encoder_option(dreambooth, bench, concept, tmp_path):
    m = dreambooth[0]
    te_before = state(m.sd.pipe.text_encoder)
    saved = dataclasses.replace(m.config)
    m.config.train_text_encoder, m.config.prior_preservation, m.config.max_train_steps = True, False, 2
    try:
        artifact = m.fit(concept, bench, tmp_path)
    finally:
        m.config = saved
    assert (artifact / "text_encoder" / "model.safetensors").is_file()
    assert json.loads((artifact / "train_log.json").read_text())["n_class_images"] == 0
    assert same_state(m.sd.pipe.text_encoder, te_before)
    m.load_artifact(concept, artifact)
    assert m._active[1].text_encoder is not m.sd.pipe.text_encoder
    assert not same_state(m._active[1].text_encoder, te_before)


def test_unreadable_photo_is_a_user_error(dreambooth, bench, concept, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        dreambooth[0].fit(dataclasses.replace(concept, train_images=(bad,)), bench, tmp_path)


# --------------------------------------------------------------------------------------------------------
# Textual Inversion
# --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inversion(cache, bench, concept, tmp_path_factory):
    from unifybench.baselines.diffusion import TextualInversionSD
    m = TextualInversionSD(ctx_for(cache), "tiny")
    m.setup()
    p = m.sd.pipe
    before = {"unet": state(p.unet), "vae": state(p.vae), "text_encoder": state(p.text_encoder)}
    out = tmp_path_factory.mktemp("ti_fit")
    return m, before, m.fit(concept, bench, out), out


def test_textual_inversion_trains_only_the_new_row(inversion, concept):
    m, before, artifact, out = inversion
    assert artifact.name == "learned_embeds.safetensors"
    saved = load_file(str(artifact))
    assert list(saved) == ["<dog>"] and saved["<dog>"].shape == (1, 32) and saved["<dog>"].dtype == torch.float32
    p = m.sd.pipe
    for name in ("unet", "vae", "text_encoder"):
        assert same_state(getattr(p, name), before[name]), name
    assert len(p.tokenizer) == 49408 and "<dog>" not in p.tokenizer.get_vocab()
    log = json.loads((out / "textual_inversion_log.json").read_text())
    assert len(log["losses"]) == m.config.max_train_steps and log["initializer"] == "dog"
    init = p.text_encoder.get_input_embeddings().weight[p.tokenizer("dog", add_special_tokens=False).input_ids[0]]
    assert not torch.equal(saved["<dog>"][0], init)                    # it moved from the class noun's embedding

    m.load_artifact(concept, artifact)
    view = m._active[1]
    token_id = view.tokenizer.convert_tokens_to_ids("<dog>")
    assert token_id == 49408 and view.tokenizer("a <dog> dog").input_ids[2] == token_id
    rows = view.text_encoder.get_input_embeddings().weight
    base_rows = before["text_encoder"]["embeddings.token_embedding.weight"]
    assert rows.shape[0] == 49409 and torch.equal(rows[:49408], base_rows)
    assert torch.equal(rows[token_id], saved["<dog>"][0])
    rest = {k: v for k, v in view.text_encoder.state_dict().items() if "token_embedding" not in k}
    assert all(torch.equal(v, before["text_encoder"][k]) for k, v in rest.items())
    assert view.unet is p.unet and view.text_encoder is not p.text_encoder


def test_textual_inversion_file_loads_in_a_plain_pipeline(inversion, sd_folder):
    from unifybench.models.stable_diffusion.pipeline import load_sd
    _, _, artifact, _ = inversion
    pipe = load_sd(sd_folder).pipe
    pipe.load_textual_inversion(str(artifact), use_safetensors=True, local_files_only=True)
    row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<dog>")]
    assert torch.equal(row, load_file(str(artifact))["<dog>"][0])


def test_textual_inversion_predict_is_reproducible(inversion, bench, concept, tmp_path):
    m, _, artifact, _ = inversion
    m.load_artifact(concept, artifact)
    a = m.predict(concept, gen_items(bench, concept), tmp_path / "a")
    m.load_artifact(concept, artifact)
    b = m.predict(concept, gen_items(bench, concept), tmp_path / "b")
    assert len(a) == 2 and all(len(p.images) == 1 for p in a)
    assert [Path(f).read_bytes() for p in a for f in p.images] == [Path(f).read_bytes() for p in b for f in p.images]


# --------------------------------------------------------------------------------------------------------
# End to end through the CLI
# --------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method,artifact", [("dreambooth-sd", "dreambooth/unet/diffusion_pytorch_model.safetensors"),
                                             ("textual-inversion", "learned_embeds.safetensors")])
def test_cli_tiny_run(method, artifact, cache, bench, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", method, "--preset", "tiny",
                           "--output-dir", str(tmp_path), "--cache-dir", str(cache), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["tiny"] is True and doc["config"]["method"]["name"] == method
    assert set(doc["models"]) == {"sd/unet/diffusion_pytorch_model.safetensors",
                                  "sd/vae/diffusion_pytorch_model.safetensors", "sd/text_encoder/model.safetensors"}
    clip_i = doc["results"]["unifybench-mini"]["clip_i"]
    names = [c.name for c in bench.concepts()]
    assert clip_i["n"] == 2 * len(names) and clip_i["n_failed"] == 0 and sorted(clip_i["per_concept"]) == sorted(names)
    assert -1.0 <= clip_i["value"] <= 1.0
    for name in names:
        assert (tmp_path / "concepts" / name / artifact).is_file()
        for row in map(json.loads, (tmp_path / "concepts" / name / "predictions.jsonl").read_text().splitlines()):
            assert row["images"] and all((tmp_path / f).is_file() for f in row["images"])
