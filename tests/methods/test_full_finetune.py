"""chameleon-full-ft on the tiny Chameleon: every language-model weight trains, the base comes back bit for bit,
the artifact round-trips exactly and strictly, and the forgetting stage's base really is the base model."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unifybench import training
from unifybench.errors import UserError
from unifybench.methods.base import RunContext
from unifybench.methods.full_finetune import ARTIFACT, ChameleonFullFinetune


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    m = ChameleonFullFinetune(RunContext(cache_dir=tmp_path_factory.mktemp("cache"), tiny=True), "tiny")
    m.setup()
    return m


@pytest.fixture(scope="module")
def dog(bench):
    return bench, next(c for c in bench.concepts() if c.name == "dog")


def state(m):
    return {k: v.detach().clone() for k, v in m.backbone.model.state_dict().items()}


def training_loss(m, samples):
    ids, mask, targets = training.collate(samples, m.backbone.pad_id, "cpu")
    with torch.no_grad():
        return float(training.sequence_loss(m.backbone, ids, mask, targets))


def read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["unifybench"])


@pytest.fixture(scope="module")
def fitted(method, dog, tmp_path_factory):
    """One fit: (artifact, full state before, full state after, base loss, optimizer steps taken)."""
    bench, concept = dog
    before = state(method)
    base_loss = training_loss(method, method.training_samples(concept))
    steps = []
    real = training.sequence_loss
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "sequence_loss", lambda *a: steps.append(1) or real(*a))
        artifact = method.fit(concept, bench, tmp_path_factory.mktemp("fit"))
    return artifact, before, state(method), base_loss, len(steps)


def test_defaults_are_the_supplementary_and_samples_are_a_photo_of_sks(method, dog):
    paper = ChameleonFullFinetune.build_config("paper", {})
    assert (paper.lr, paper.batch_size, paper.iterations, paper.prompt) == (1e-7, 2, 300, "A photo of <sks>.")
    assert ChameleonFullFinetune.build_config("iter500", {}).iterations == 500
    assert paper.identifier == "<reserved16200>" and paper.backbone == "leloy/Anole-7b-v0.1-hf"
    b = method.backbone
    assert method.personalized_prompt() == [b.token_id("<reserved16200>")]
    samples = method.training_samples(dog[1])
    assert len(samples) == 2 * len(dog[1].train_images)             # every photo and its mirror image
    human = [b.bos_id] + b.encode_text("A photo of ") + [method.sks] + b.encode_text(".") + [b.eot_id]
    for s in samples:
        assert s.ids[:len(human)] == human and not any(s.supervised[:len(human)])
        answer = s.ids[len(human):]
        assert all(s.supervised[len(human):]) and answer[0] == b.boi_id and answer[-2:] == [b.eoi_id, b.eot_id]
        assert len(answer) == b.image_seq_length + 3
    assert samples[0].ids != samples[1].ids                           # the flip is a different image


def test_fit_trains_every_lm_tensor_and_lowers_the_loss(method, dog, fitted):
    artifact, before, _, base_loss, steps = fitted
    tensors, header = read(artifact)
    lm = set(method.lm_params)
    assert lm == {k for k in before if not k.startswith("model.vqmodel.")}
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"} <= lm and len(lm) > 20
    assert set(tensors) == lm
    assert [k for k in lm if torch.equal(tensors[k], before[k])] == [] and header["unchanged_tensors"] == []
    # 8 iterations of batch 2 over 6 samples: 3 steps an epoch, the third epoch cut after 2.
    assert steps == method.config.iterations == 8 and len(header["epoch_losses"]) == 3
    assert header["method"] == "chameleon-full-ft" and header["concept"] == "dog" and header["samples"] == 6
    method.load_artifact(dog[1], artifact)
    try:
        assert training_loss(method, method.training_samples(dog[1])) < base_loss - 0.1
    finally:
        method.unload()


def test_backbone_is_the_base_after_fit_and_after_unload(method, dog, fitted):
    artifact, before, after = fitted[:3]
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    method.load_artifact(dog[1], artifact)
    assert any(not torch.equal(v, before[k]) for k, v in state(method).items())
    method.unload()
    now = state(method)
    assert [k for k in before if not torch.equal(before[k], now[k])] == []


def test_load_artifact_puts_exactly_the_saved_weights_in(method, dog, fitted):
    artifact, before = fitted[:2]
    tensors, _ = read(artifact)
    b = method.backbone
    ids = torch.tensor([[b.bos_id] + method.personalized_prompt() + b.encode_text(" Is it here?")])
    try:
        method.load_artifact(dog[1], artifact)
        now = state(method)
        for k, v in now.items():
            assert torch.equal(v, tensors[k] if k in tensors else before[k]), k   # the VQ model stays the base's
        with torch.no_grad():
            first = b.logits(b.forward_hidden(ids)[0])
        method.unload()
        method.load_artifact(dog[1], artifact)
        with torch.no_grad():
            assert torch.equal(first, b.logits(b.forward_hidden(ids)[0]))
    finally:
        method.unload()


def test_corrupt_or_mismatched_artifacts_are_user_errors(method, dog, fitted, tmp_path):
    artifact, before = fitted[:2]
    tensors, header = read(artifact)
    meta = {"unifybench": json.dumps(header)}

    def write(name, t, m=meta):
        path = tmp_path / name
        save_file(t, str(path), metadata=m)
        return path

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(artifact.read_bytes()[:-100])
    short = write("short.safetensors", {k: v for k, v in tensors.items() if k != "lm_head.weight"})
    shape = write("shape.safetensors", dict(tensors, **{"model.norm.weight": torch.zeros(3)}))
    extra = write("extra.safetensors", dict(tensors, stray=torch.zeros(1)))
    other = write("other.safetensors", tensors, {"unifybench": json.dumps(dict(header, method="yochameleon"))})
    sha = write("sha.safetensors", tensors, {"unifybench": json.dumps(dict(header, backbone_sha256="0" * 64))})
    method.load_artifact(dog[1], artifact)    # a concept is loaded: a bad file must still leave the base
    for path, words in [(garbage, "not a readable"), (truncated, "not a readable"), (short, "lm_head.weight"),
                        (shape, "model.norm.weight"), (extra, "stray"), (other, "not chameleon-full-ft"),
                        (sha, "another backbone"), (tmp_path / "missing.safetensors", "not a readable")]:
        with pytest.raises(UserError, match=words) as info:
            method.load_artifact(dog[1], path)
        assert str(path) in str(info.value)
        now = state(method)
        assert [k for k in before if not torch.equal(before[k], now[k])] == [], path.name
    with pytest.raises(UserError, match="no fine-tuned weights"):
        method.load_artifact(dog[1], None)


def test_same_seed_gives_identical_artifact_bytes(method, dog, fitted, tmp_path):
    bench, concept = dog
    (tmp_path / "again").mkdir()
    again = method.fit(concept, bench, tmp_path / "again")
    assert again.name == ARTIFACT and again.read_bytes() == fitted[0].read_bytes()
    method.ctx.seed = 1
    try:
        (tmp_path / "seed1").mkdir()
        other = method.fit(concept, bench, tmp_path / "seed1")
    finally:
        method.ctx.seed = 0
    assert other.read_bytes() != fitted[0].read_bytes()     # the seed decides the order


# ------------------------------------------------------------------------------------------ through the CLI

def unifybench(method, evaluators, out, cache, env=None, sets=()):
    return subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", method, "--preset", "tiny",
                           "--concepts", "dog", *[a for kv in sets for a in ("--set", kv)],
                           "--evaluators", evaluators, "--output-dir", str(out), "--cache-dir", str(cache),
                           "--no-progress"], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = unifybench("chameleon-full-ft", "recognition,clip_i", out, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["method"]["name"] == "chameleon-full-ft" and doc["config"]["method"]["preset"] == "tiny"
    res = doc["results"]["unifybench-mini"]
    assert res["recognition"]["n"] > 0 and res["recognition"]["n_failed"] == 0
    assert res["clip_i"]["n"] == 4 and res["clip_i"]["n_failed"] == 0     # 1 prompt per task, 2 images each
    assert (out / "concepts" / "dog" / ARTIFACT).exists()
    # No readable-text check here: the steering of the tiny Chameleon lives in its weights, and a full
    # fine-tune (every weight, 8 steps at lr 1e-3) rewrites them; its answers are whatever it learned.
    rows = [json.loads(line) for line in (out / "samples" / "clip_i.jsonl").read_text().splitlines()]
    assert all((out / r["image"]).exists() for r in rows)


@pytest.mark.slow
def test_forgetting_base_is_the_base_model(tmp_path):
    from forgetting_fixture import write_mmbench, write_pope
    env = dict(os.environ, UNIFYBENCH_POPE_ROOT=str(write_pope(tmp_path / "pope")),
               UNIFYBENCH_MMBENCH_ROOT=str(write_mmbench(tmp_path / "mmbench_dev.tsv")))
    cache = tmp_path / "cache"
    runs = {"chameleon-full-ft": (), "yochameleon": ("epochs=1", "n_soft_positives=0", "n_hard_negatives=0")}
    for name, sets in runs.items():
        proc = unifybench(name, "pope,mmbench", tmp_path / name, cache, env, sets)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def samples(name, ev, model, condition="plain"):
        path = tmp_path / name / "forgetting" / "samples" / ev / f"{model}.{condition}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    docs = {n: json.loads((tmp_path / n / "results.json").read_text())["forgetting"] for n in runs}
    for ev in ("pope", "mmbench"):
        ft, yo = docs["chameleon-full-ft"]["evaluators"][ev], docs["yochameleon"]["evaluators"][ev]
        assert ft["base"]["n"] > 0 and ft["base"]["result"] == yo["base"]["result"], ev
        assert samples("chameleon-full-ft", ev, "base") == samples("yochameleon", ev, "base"), ev
        assert set(ft["concepts"]["dog"]) == {"plain", "prompt"}
        # The fine-tuned model answers differently: equal bases are not equal by accident.
        answers = [r.get("answer") for r in samples("chameleon-full-ft", ev, "dog")]
        assert answers != [r.get("answer") for r in samples("chameleon-full-ft", ev, "base")], ev
