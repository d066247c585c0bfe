"""The method interface: `fit` one concept, then `predict` its items.

A baseline is a method whose `fit` learns nothing (returns None). Hyperparameters live in one
dataclass per method (`config_cls`); presets are named overrides of it (`"paper"` is the default,
`"tiny"` the embedded CPU default), and the user's `--set key=value` overrides come last.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifybench.data.schema import Benchmark, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.settings import check_ranges


@dataclass
class RunContext:
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    cache_dir: Path = Path.home() / ".cache" / "unifybench"
    tiny: bool = False                       # tiny random backbones + the bundled mini benchmark
    models: dict[str, str] = field(default_factory=dict)   # role -> local path ("chameleon", "clip")
    progress: Any = None                     # a unifybench.progress.Progress (rich), or None


class Method:
    name: str = ""
    tasks: frozenset[str] = frozenset()      # item tasks this method can answer
    not_scored_by: frozenset[str] = frozenset()   # evaluators whose cells the papers leave "-" for this row
    calls_api: bool = False                  # answers through an OpenAI-compatible server (--set base_url=)
    config_cls: type | None = None           # dataclass of hyperparameters
    presets: dict[str, dict[str, Any]] = {}  # preset name -> field overrides
    # The local model the method answers with (a unifybench.models backbone), set by `setup`; None: none
    # (API models, image-only baselines). The forgetting stage evaluates it.
    backbone: Any = None
    # The active concept's prompt prefix (token ids or text) that the forgetting stage's "prompt"
    # condition puts in front of every query: a method defines it as a method. None: the method has no
    # personalized model besides its base (a training-free baseline), so only the base model is tested.
    personalized_prompt: Any = None
    _backbone_sha: str | None = None         # backbone_hash's memo

    def __init__(self, ctx: RunContext, preset: str | None = None, overrides: dict[str, Any] | None = None):
        self.ctx = ctx
        self.preset = preset or ("tiny" if ctx.tiny and "tiny" in self.presets else "paper")
        self.config = self.build_config(self.preset, overrides or {})

    @classmethod
    def build_config(cls, preset: str, overrides: dict[str, Any]):
        if cls.config_cls is None:
            if overrides:
                raise UserError(f"{cls.name!r} takes no settings (got {', '.join(sorted(overrides))})")
            return None
        if preset != "paper" and preset not in cls.presets:
            raise UserError(f"{cls.name!r} has no preset {preset!r} "
                            f"(known: {', '.join(['paper', *sorted(cls.presets)])})")
        values = dict(cls.presets.get(preset, {}))
        values.update(overrides)
        fields = {f.name: f for f in dataclasses.fields(cls.config_cls)}
        for key, value in list(values.items()):
            if key not in fields:
                raise UserError(f"{cls.name!r} has no setting {key!r} (known: {', '.join(sorted(fields))})")
            values[key] = _coerce(value, fields[key].type, key)
        config = cls.config_cls(**values)
        check_ranges(config, cls.name)
        return config

    def describe(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config) if self.config is not None else {}
        return {"name": self.name, "preset": self.preset, "config": cfg}

    def needs(self, concepts: list[Concept] | None) -> list:
        """Every weight and service `setup`, `fit` and `predict` will load or call (`unifybench.needs.Need`s,
        made with the same settings `setup` passes to the weights resolver), so that the run checks them all
        before the first fit and `run --check` can list them. `concepts`: the run's, or None when unknown.
        Default: nothing."""
        return []

    # --- the life cycle the runner drives ---
    def setup(self) -> None:
        """Load backbones (once per run)."""

    def model_files(self) -> dict[str, Path]:
        """Weight files used, by role; their hashes go into results.json."""
        return {}

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path | None:
        """Learn the concept; write the artifact under `out_dir` and return its path (None: nothing learned)."""
        return None

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        """Make `concept` the active one (its tokens loaded) before `predict`."""

    def backbone_hash(self) -> str:
        """One sha256 over `self.backbone`'s weight files (each hashed once and remembered by size and mtime):
        what an artifact records so that it is never loaded into another backbone."""
        if self._backbone_sha is None:
            import hashlib

            from unifybench.store import file_sha256
            h = hashlib.sha256()
            for p in self.backbone.weight_files():
                h.update(file_sha256(p, self.ctx.cache_dir).encode())
            self._backbone_sha = h.hexdigest()
        return self._backbone_sha

    def unload(self) -> None:
        """Back to the base model, no concept active (the forgetting stage's base, and between concepts).
        Default: detach any concept tokens from `self.backbone`; a method that changes the backbone's own
        weights restores them."""
        if self.backbone is not None:
            from unifybench.models.concept_tokens import detach
            detach(self.backbone)

    def asked(self, items: list[Item]) -> list[Item]:
        """The items this method is set to answer: all of them, except the generation prompts a recorded
        `gen_prompts_limit` setting leaves out (the tiny presets draw one prompt per task). The runner scores
        an asked item without a prediction as wrong; the others are reported as not asked."""
        limit = 0
        if self.config is not None and "gen_prompts_limit" in {f.name for f in dataclasses.fields(self.config)}:
            limit = int(self.config.gen_prompts_limit)
        if limit <= 0:
            return list(items)
        kept = {i.id for i in generation_items(items, self.tasks, limit)}
        from unifybench.data.schema import IMAGE_TASKS
        return [i for i in items if i.task not in IMAGE_TASKS or i.id in kept]

    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        """Answer/generate every item; images go under `out_dir` (paths relative to the run folder)."""
        raise NotImplementedError


def generation_items(items: list[Item], tasks: frozenset[str], limit: int = 0) -> list[Item]:
    """The gen and knowledge_gen items among `tasks`; with `limit` > 0 only the first `limit` prompts of each
    task (a setting recorded in the run's config: the tiny presets draw one prompt per task)."""
    from unifybench.data.schema import IMAGE_TASKS
    out, seen = [], {}
    for item in items:   # the benchmark's order
        if item.task in IMAGE_TASKS & tasks:
            seen[item.task] = seen.get(item.task, 0) + 1
            if limit <= 0 or seen[item.task] <= limit:
                out.append(item)
    return out


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """`--set k=v` gives strings; turn them into the field's type."""
    if not isinstance(value, str):
        return value
    kind = str(annotation)
    try:
        if kind in ("int", "<class 'int'>"):
            return int(value)
        if kind in ("float", "<class 'float'>"):
            return float(value)
        if kind in ("bool", "<class 'bool'>"):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except ValueError:
        raise UserError(f"setting {key!r}: cannot read {value!r} as {kind}") from None
    if kind.startswith("str") and "None" in kind and value.lower() == "none":
        return None
    return value
