"""RAP-MLLM (Hao et al., CVPR 2025; UniCTokens Table 1 "RAP-MLLM"): retrieval-augmented personalization.

Nothing is trained per concept: each concept is an entry of a database (its name, one reference photo, a
short description), and the entries retrieved for a question are put into the prompt of RAP-LLaVA, the
LLaVA-1.5-13B that RAP post-trained on its 260K personalization set (give its weights converted to the
llava-hf layout with `--model llava=PATH` or `--set backbone=PATH`; any LLaVA-1.5 folder runs the protocol).

As the released evaluation scripts do it (Hoar012/RAP-MLLM: eval/recognition.py, VQA.py, TQA.py and
retriever.py, read for the protocol):

- the database holds every concept of the benchmark; an entry's photo is the concept's first training
  photo, its info the benchmark's description of it;
- retrieval: every concept whose name occurs in the question text is retrieved (what the scripts run: they
  pass no image queries); with `retrieval="image"` the database photos are also ranked by CLIP cosine to the
  query photo (RAP crops detector boxes first; here the whole photo is the one query) and the nearest are
  added until `top_k` entries;
- prompt (llava_v1 conversation): with a query photo `<image>\\n[{entries}]{question}`, the query photo first
  and then the retrieved photos in order; without one (text-only QA) `{entries}{question}`; each entry reads
  `{i}.<image>\\n Name: <bo>, Info: {info}\\n`;
- at most 128 new tokens. Decoding here is greedy; the scripts sample at temperature 0.2, which would make
  reruns differ.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from unifybench.data.schema import MC, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.prompts import concept_name, question_text
from unifybench.images import open_rgb
from unifybench.methods.base import Method
from unifybench.models import torch_dtype
from unifybench.progress import maybe_task
from unifybench.settings import positive

ENTRY = "{i}.<image>\n Name: {name}, Info: {info}\n"


@dataclass
class RapConfig:
    backbone: str = "Hoar012/RAP-LLaVA-13b"   # a llava-hf folder or cached hub id; "tiny" for the random tiny model
    retrieval: str = "name"                  # "name" (the released scripts) | "image" (+ CLIP search of the photo)
    top_k: int = positive(1)                 # the scripts' --topK: how many entries image search fills up to
    retrieval_clip: str = ""                 # open_clip checkpoint for "image" (RAP: CLIP ViT-L/14-336); --model clip=
    max_new_tokens: int = positive(128)      # answers, greedy
    name_format: str = "<{name}>"            # how the concept is named in prompts and in the database


@dataclass(frozen=True)
class Entry:
    tag: str       # the concept's folder name: what the scripts look for in the question
    name: str      # as the prompt writes it, "<bo>"
    image: Path
    info: str

    def to_json(self) -> dict:
        return {"tag": self.tag, "name": self.name, "image": str(self.image), "info": self.info}

    @classmethod
    def from_json(cls, d: dict) -> "Entry":
        return cls(d["tag"], d["name"], Path(d["image"]), d["info"])


def rap_query(question: str, entries: list[Entry], with_image: bool) -> str:
    """The user turn the RAP scripts build (the query photo's marker first when there is one)."""
    info = "".join(ENTRY.format(i=i + 1, name=e.name, info=e.info) for i, e in enumerate(entries))
    return f"<image>\n[{info}]{question}" if with_image else f"{info}{question}"


class RapLlava(Method):
    name = "rap-llava"
    tasks = frozenset({REC, VQA, TEXT_QA, MC})
    config_cls = RapConfig
    presets = {"tiny": dict(backbone="tiny", max_new_tokens=8),
               "image-retrieval": dict(retrieval="image", top_k=2)}

    def setup(self) -> None:
        from unifybench.models.llava.backbone import LlavaBackbone
        from unifybench.models.weights import resolve
        cfg = self.config
        if cfg.retrieval not in ("name", "image"):
            raise UserError(f"rap-llava: retrieval must be 'name' or 'image', not {cfg.retrieval!r}")
        path = resolve("llava", cfg.backbone, self.ctx)
        self.backbone = LlavaBackbone.load(path, device=self.ctx.device, dtype=torch_dtype(self.ctx.dtype))
        self._clip = None
        self.database: list[Entry] = []
        if cfg.retrieval == "image":   # loaded now, so its weights are hashed into results.json
            self._retrieval_clip()

    def needs(self, concepts) -> list:
        from unifybench import needs
        from unifybench.retrieval import retrieval_clip_need
        out = [needs.weights("llava", self.config.backbone, self.ctx, f"method {self.name}")]
        return out + ([retrieval_clip_need(*self._clip_args())] if self.config.retrieval == "image" else [])

    def model_files(self) -> dict[str, Path]:
        files = {f"llava/{p.name}": p for p in self.backbone.weight_files()}
        if self._clip is not None:
            files.update({f"retrieval_clip/{Path(p).name}": Path(p) for p in self._clip.files})
        return files

    # --- the database: every concept of the benchmark, written beside each concept's outputs ---
    def entry(self, concept: Concept) -> Entry:
        if not concept.train_images:
            raise UserError(f"rap-llava: concept {concept.name!r} has no training photo for its database entry")
        name = concept_name(concept, self.config.name_format)
        return Entry(concept.name, name, Path(concept.train_images[0]), concept.info.replace(PLACEHOLDER, name))

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path:
        path = Path(out_dir) / "rap_database.json"
        path.write_text(json.dumps([self.entry(c).to_json() for c in benchmark.concepts()], indent=1))
        return path

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        self.database = [Entry.from_json(d) for d in json.loads(Path(path).read_text())]

    # --- retrieval ---
    def _clip_args(self) -> tuple:
        from unifybench.models.weights import is_tiny
        tiny = self.ctx.tiny or is_tiny(self.config.backbone)
        return self.config.retrieval_clip, self.ctx, tiny, "rap-llava", "retrieve by image"

    def _retrieval_clip(self):
        if self._clip is None:
            from unifybench.retrieval import retrieval_clip
            self._clip = retrieval_clip(*self._clip_args())
        return self._clip

    def retrieve(self, question: str, image: Path | None) -> list[Entry]:
        """Entries whose tag the question mentions (database order), then, with image retrieval, the photos
        nearest to the query photo until `top_k` entries."""
        found = [e for e in self.database if e.tag in question]
        if self.config.retrieval == "image" and image is not None:
            from unifybench.retrieval import rank_pool
            by_image = {e.image: e for e in self.database}
            for path, _ in rank_pool(self._retrieval_clip(), [Path(image)], list(by_image), self.ctx.cache_dir):
                if len(found) >= self.config.top_k:
                    break
                if by_image[path] not in found:
                    found.append(by_image[path])
        return found

    # --- prediction ---
    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        import torch
        b = self.backbone
        name = concept_name(concept, self.config.name_format)
        items = [i for i in items if i.task in self.tasks]
        preds = []
        with torch.no_grad(), maybe_task(self.ctx.progress, f"answering {concept.name}", len(items)) as advance:
            for item in items:
                query = Path(item.image) if item.image is not None and item.task != TEXT_QA else None
                question = question_text(item, name)
                entries = self.retrieve(question, query)
                photos = ([query] if query else []) + [e.image for e in entries]
                ids = b.prompt_ids(rap_query(question, entries, query is not None), inline_images=len(photos))
                px = b.pixel_values([open_rgb(p) for p in photos]) if photos else None
                out = b.generate_text(torch.tensor([ids], device=b.device), self.config.max_new_tokens, pixel_values=px)
                preds.append(Prediction(item.id, item.concept, item.task, item.prompt, text=b.decode(out)))
                advance()
        return preds
