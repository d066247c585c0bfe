"""The tiny LLaVA-NeXT in the hub layout: safetensors loaded by from_pretrained; our prompt ids are the
processor's own expansion (anyres, size-dependent runs); our greedy decoding equals transformers' generate."""
import json

import pytest
import torch
from PIL import Image

from unifybench.errors import UserError
from unifybench.models.llava.backbone import SYSTEM
from unifybench.models.llava_next.backbone import LlavaNextBackbone
from unifybench.models.llava_next.tiny import tiny_llava_next_path


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return LlavaNextBackbone.load(tiny_llava_next_path(tmp_path_factory.mktemp("tiny")))


def test_hub_layout(backbone):
    files = sorted(p.name for p in backbone.path.iterdir())
    assert "model.safetensors" in files and "config.json" in files and not any(f.endswith(".bin") for f in files)
    cfg = json.loads((backbone.path / "config.json").read_text())
    assert cfg["model_type"] == "llava_next" and cfg["image_grid_pinpoints"]
    assert type(backbone.model).__name__ == "LlavaNextForConditionalGeneration"


@pytest.mark.parametrize("size", [(48, 36), (32, 32), (30, 70)])
def test_prompt_and_greedy_match_transformers(backbone, size):
    image = Image.new("RGB", size, (200, 30, 30))
    px, sizes = backbone.image_inputs([image])
    ids = backbone.prompt_ids("Is it here?", n_images=1, image_sizes=[size])
    ref = backbone.processor(text=f"{SYSTEM} USER: <image>\nIs it here? ASSISTANT:", images=image, return_tensors="pt")
    assert ids == ref["input_ids"][0].tolist()
    ours = backbone.generate_text(torch.tensor([ids]), 4, pixel_values=px, image_sizes=sizes)
    theirs = backbone.model.generate(**ref, max_new_tokens=4, do_sample=False)[0, len(ids):].tolist()
    assert ours == [t for t in theirs if t != backbone.eos_id][:len(ours)] and len(ours) > 0


def test_counts_depend_on_size_and_markers_are_checked(backbone):
    assert backbone.image_token_count((48, 36)) != backbone.image_token_count((30, 70))
    with pytest.raises(UserError):
        backbone.prompt_ids("<image> twice", n_images=1, image_sizes=[(32, 32)])


def test_wrong_model_type_is_one_line(tmp_path):
    from unifybench.models.llava.tiny import tiny_llava_path
    with pytest.raises(UserError, match="model_type is 'llava', expected 'llava_next'"):
        LlavaNextBackbone.load(tiny_llava_path(tmp_path))
