"""The one weights resolver: every `--model ROLE=` a runnable or evaluator uses is honoured under every preset,
and a role pointed at a missing folder is the one-line UserError. Resolution only: the run stops at the role
under test (no training, no scoring)."""
from __future__ import annotations

import pytest

from unifybench import registry
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext
from unifybench.methods.base import RunContext
from unifybench.models import torch_dtype, weights

# The weight roles each registered runnable loads in setup(), with the settings that make it load them.
SHOWO = ("showo", "phi", "magvit")
RUNNABLE_ROLES: dict[str, tuple[tuple[str, ...], dict]] = {
    "yochameleon": (("chameleon", "clip"), {}),
    "chameleon-full-ft": (("chameleon",), {}),
    "unictokens": (SHOWO, {}),
    "yollava": (("llava", "clip"), {}),
    "mc-llava": (("llava-next",), {}),
    "chameleon-ip": (("chameleon",), {}),
    "chameleon-original": (("chameleon",), {}),
    "chameleon-tp": (("chameleon",), {}),
    "showo-tp": (SHOWO, {}),
    "llava-tp": (("llava",), {}),
    "qwen25vl-tp": (("qwen",), {}),
    "rap-llava": (("llava", "clip"), {"retrieval": "image"}),
    "dreambooth-sd": (("sd",), {}),
    "textual-inversion": (("sd",), {}),
    "gpt4o-tp": ((), {}), "gpt4o-ip": ((), {}), "random": ((), {}), "real-images": ((), {}),
}
CASES = [(name, role) for name, (roles, _) in RUNNABLE_ROLES.items() for role in roles]


class Resolved(Exception):
    """Raised by the spy once the role under test is resolved: the test reads resolution, not a run."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def spy(monkeypatch):
    """Wraps the real `weights.resolve`; stops the run right after `target` resolved (or failed)."""
    real, seen = weights.resolve, {}

    def resolve(role, setting, ctx, missing=None, tiny=None):
        path = real(role, setting, ctx, missing=missing, tiny=tiny)
        if role == seen["target"]:
            seen["path"] = path
            raise Resolved
        return path
    monkeypatch.setattr(weights, "resolve", resolve)
    return seen


def _models(cache, roles, target, folder):
    """Every role of the runnable at its tiny folder (so paper presets find weights), `target` at `folder`."""
    return {r: str(folder if r == target else weights.tiny_folder(r, cache)) for r in roles}


def test_every_registered_runnable_is_covered():
    assert set(RUNNABLE_ROLES) == set(registry.METHODS.names()) | set(registry.BASELINES.names())


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("name,role", CASES)
def test_model_flag_is_honoured(name, role, preset, cache, tmp_path, spy):
    roles, overrides = RUNNABLE_ROLES[name]
    alt = tmp_path / f"my-{role}"
    alt.symlink_to(weights.tiny_folder(role, cache), target_is_directory=True)   # same weights, another folder
    ctx = RunContext(cache_dir=cache, tiny=preset == "tiny", models=_models(cache, roles, role, alt))
    cls = registry.get_runnable(name)
    spy["target"] = role
    with pytest.raises(Resolved):
        cls(ctx, preset, overrides).setup()
    assert str(spy["path"]) == str(alt)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("name,role", CASES)
def test_model_flag_at_a_missing_folder_is_a_user_error(name, role, preset, cache, tmp_path, spy):
    roles, overrides = RUNNABLE_ROLES[name]
    missing = tmp_path / "no-such-folder"
    ctx = RunContext(cache_dir=cache, tiny=preset == "tiny", models=_models(cache, roles, role, missing))
    spy["target"] = role
    with pytest.raises(UserError, match="no-such-folder") as e:
        registry.get_runnable(name)(ctx, preset, overrides).setup()
    assert "\n" not in str(e.value)


EVALUATOR_ROLES = {"clip_i": "clip", "clip_t": "clip", "dino": "dino", "face": "face"}


def _load_evaluator(ev, ctx):
    if ev.name == "face":
        return ev.resolve_pack(ctx)[0]
    from unifybench.evaluators.dino import resolve_dino
    from unifybench.evaluators.clip_image import resolve_backbone
    if ev.name == "dino":
        return resolve_dino(ev.params["backbone"], ctx)
    return resolve_backbone(ev.params["backbone"], ctx, ev.name)


@pytest.mark.parametrize("tiny", [True, False])
@pytest.mark.parametrize("name,role", sorted(EVALUATOR_ROLES.items()))
def test_evaluators_honour_the_model_flag(name, role, tiny, cache, tmp_path):
    alt = tmp_path / f"my-{role}"
    alt.symlink_to(weights.tiny_folder(role, cache), target_is_directory=True)
    ev = registry.EVALUATORS.get(name)()
    ctx = EvalContext(run_dir=tmp_path, cache_dir=cache, tiny=tiny, models={role: str(alt)})
    assert str(_load_evaluator(ev, ctx)) == str(alt)
    # a tiny setting loses to --model too: the flag is first for every preset
    if "backbone" in ev.params:
        ev.params["backbone"] = "tiny"
        assert str(_load_evaluator(ev, ctx)) == str(alt)
    ctx.models = {role: str(tmp_path / "no-such-folder")}
    with pytest.raises(UserError, match="no-such-folder"):
        _load_evaluator(ev, ctx)


def test_precedence_flag_then_setting_then_tiny(cache, tmp_path):
    ctx = RunContext(cache_dir=cache, tiny=False)
    tiny = weights.tiny_folder("chameleon", cache)
    assert weights.resolve("chameleon", "tiny", ctx) == tiny
    assert weights.resolve("chameleon", str(tiny), ctx) == tiny                    # a folder setting
    alt = tmp_path / "alt"
    alt.symlink_to(tiny, target_is_directory=True)
    ctx.models = {"chameleon": str(alt)}
    assert weights.resolve("chameleon", "tiny", ctx) == alt                        # the flag wins
    with pytest.raises(UserError, match="pass --model clip=PATH"):
        weights.resolve("clip", None, RunContext(cache_dir=cache, tiny=False))    # unset, not tiny: the error
    assert weights.resolve("clip", None, RunContext(cache_dir=cache, tiny=True)) == weights.tiny_folder("clip", cache)
    assert weights.is_tiny("tiny") and weights.is_tiny("tiny-phi") and not weights.is_tiny("tinyllama/x")


def test_one_dtype_converter():
    import torch
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype("fp16") is torch.float16
    assert torch_dtype(torch.float32) is torch.float32
    with pytest.raises(UserError):
        torch_dtype("float8")
