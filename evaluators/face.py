"""Face similarity: ArcFace cosine between the faces in generated images and in the concept's photos.

insightface `FaceAnalysis` (detection + recognition only) on onnxruntime, with the model pack as a local
folder (see `unifybench.models.encoders.face`). Per image: detect at an explicit `det_size`, pick one face
(`face_select`), take its L2-normalised embedding. One sample per generated image (`"<item id>#<k>"`):
the mean cosine between its face and every reference face. The concept value is the mean over generated
images with a face, i.e. the mean over all (reference, generated) pairs that have faces.

No face:
  * a reference photo without a face is left out and counted (`n_no_face_reference`);
  * a generated image without a face is, under `no_face="exclude"` (default), a failed sample with reason
    "no face detected" (counted in n_failed and in `n_no_face_generated`, never a number); under
    `no_face="zero"` (preset `strict`) it scores 0 and is counted too. Never a silent 0.
`extra_aggregates` puts n_no_face_generated, n_no_face_reference and the detection rates beside the value.

Params:
  pack         "antelopev2" | "buffalo_l" (a folder `<root>/models/<pack>/`), or a path to a pack folder.
  root         the folder holding `models/<pack>/`; unset: the run's `--model face=PATH` (a root or a pack
               folder), else the tiny pack in tiny runs, else `~/.insightface` if the pack is there, else an
               error. Nothing is ever downloaded.
  det_size     [640, 640] (set explicitly: insightface 1.0+ changed the default to a 128 + 640 merge).
  det_thresh   0.5 (insightface's default).
  face_select  "largest" (bbox area; UniCTokens) or "first" (highest detection score; Yo'Chameleon).
  no_face      "exclude" or "zero" (see above).
  pre_resize   null, or "unictokens": before detection, UniCTokens eval/face_eval_v2.py's two-step resize
               (short side to 1024, long side to 1280, then floored to multiples of 64; see
               `unictokens_resize`).
  references   "train" or "test".
  categories   concept categories scored (default ["person"]); "all" scores every concept. Other concepts
               get no samples (their value is null, nothing is loaded for them).
  providers    onnxruntime providers to ask for; unset: CUDA + CPU on a cuda device, CPU otherwise. The
               providers really applied (session.get_providers()) are recorded in `environment()`.
Presets: `unifybench`/`default` (UniCTokens: antelopev2, largest face, 1280 pre-resize, faceless images
skipped), `yochameleon` (buffalo_l, first face, no pre-resize, excluded and counted), `strict` (as
unifybench, but a generated image without a face scores 0).
"""
from __future__ import annotations

import hashlib
import io
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Concept, Item, Prediction
from unifybench.errors import DataError, UserError
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore
from unifybench.evaluators.image_similarity import collect_generated
from unifybench.images import to_rgb

log = logging.getLogger(__name__)

PACKS = ("antelopev2", "buffalo_l")
FACE_SELECT = ("largest", "first")
NO_FACE = ("exclude", "zero")
PRE_RESIZE = (None, "unictokens")
NO_FACE_REASON = "no face detected"


def unictokens_resize(image):
    """PIL image as UniCTokens eval/face_eval_v2.py's ``resize_img`` leaves it (bilinear both times).

    The sizes come from two rescalings: the short side to 1024 (both sides rounded), then the long side of
    that size to 1280 (rounded again; Python's round, halves to even). The image is resized to that size,
    then resized a second time to it with both sides floored to multiples of 64. A single resize straight
    to the final size differs for some non-square images (80 x 267: 320 x 1280 here, 384 x 1280 in one step)
    and in its pixels."""
    from PIL import Image
    w, h = image.size
    r = 1024 / min(h, w)
    w, h = round(r * w), round(r * h)
    r = 1280 / max(h, w)
    first = (round(r * w), round(r * h))
    image = image.resize(first, Image.BILINEAR)
    return image.resize((first[0] // 64 * 64, first[1] // 64 * 64), Image.BILINEAR)


def select_face(faces: list, rule: str):
    """The face a rule keeps: "largest" bbox area (the last of equals, as UniCTokens' stable sort by area
    then ``[-1]``), or "first" (highest detection score)."""
    if not faces:
        return None
    if rule == "first":
        return faces[0]
    areas = [float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])) for f in faces]
    return faces[len(areas) - 1 - int(np.argmax(areas[::-1]))]


_MEMO: dict[tuple, tuple] = {}
_MEMO_LOCK = threading.Lock()


class FaceSimilarity(Evaluator):
    name = "face"
    version = "1"
    tasks = frozenset({GEN, KNOWLEDGE_GEN})
    higher_is_better = True
    needs_service = False
    defaults: dict[str, Any] = {
        "pack": "antelopev2",          # insightface model pack: "antelopev2" | "buffalo_l" | a pack folder
        "root": None,                  # folder holding models/<pack>/; unset: --model face=, tiny, ~/.insightface
        "det_size": [640, 640],        # detector input size, set explicitly (insightface 1.0 changed it)
        "det_thresh": 0.5,             # face detection score threshold
        "face_select": "largest",      # the face of an image: "largest" box (UniCTokens) | "first" (best score)
        "no_face": "exclude",          # a generated image without a face: "exclude" (failed) | "zero"
        "pre_resize": "unictokens",    # resize before detection: "unictokens" two-step | None
        "references": "train",         # the concept photos compared with: "train" | "test"
        "categories": ["person"],      # concept categories scored; "all": every concept
        "providers": None,             # onnxruntime execution providers; None: CPU (CUDA first on --device cuda)
    }
    presets = {
        "default": {},
        "unifybench": {"pack": "antelopev2", "face_select": "largest", "no_face": "exclude",
                       "pre_resize": "unictokens"},
        "yochameleon": {"pack": "buffalo_l", "face_select": "first", "no_face": "exclude", "pre_resize": None},
        "strict": {"pack": "antelopev2", "face_select": "largest", "no_face": "zero", "pre_resize": "unictokens"},
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        p = self.params
        for key, known in (("face_select", FACE_SELECT), ("no_face", NO_FACE), ("pre_resize", PRE_RESIZE),
                           ("references", ("train", "test"))):
            if p[key] in ("none", "null", "None"):
                p[key] = None
            if p[key] not in known:
                raise UserError(f"face: unknown {key} {p[key]!r} (known: {', '.join(str(k) for k in known)})")
        try:
            size = p["det_size"]
            if isinstance(size, str):
                size = [int(v) for v in size.replace("x", ",").split(",")]
            elif isinstance(size, int):
                size = [size, size]
            p["det_size"] = [int(size[0]), int(size[1])]
            p["det_thresh"] = float(p["det_thresh"])
        except (TypeError, ValueError, IndexError):
            raise UserError("face: det_size must be [width, height] (e.g. [640, 640]) and det_thresh a number") from None
        if min(p["det_size"]) < 32 or not 0 < p["det_thresh"] < 1:
            raise UserError("face: det_size sides must be >= 32 and 0 < det_thresh < 1")
        cats = p["categories"]
        if isinstance(cats, str):
            cats = None if cats == "all" else [c.strip() for c in cats.split(",") if c.strip()]
        p["categories"] = cats
        if isinstance(p["providers"], str):
            p["providers"] = [v.strip() for v in p["providers"].split(",") if v.strip()]
        self._app = None
        self._pack_label: str | None = None
        self._cache_dir: Path | None = None
        self._stats: dict[str, dict[str, int]] = {}
        self._skipped: set[str] = set()

    # --- model ------------------------------------------------------------------------------------------
    def needs(self, ctx: EvalContext, concepts) -> list:
        cats = self.params["categories"]
        if concepts is not None and cats is not None and not any(c.category in cats for c in concepts):
            return []   # no concept it scores: nothing is loaded
        from unifybench import needs

        def locate() -> str:
            folder, label = self.resolve_pack(ctx, build=False)
            return str(folder) if folder is not None else label
        return [needs.Need("weights", f"evaluator {self.name}: face weights", locate, "face")]

    def resolve_pack(self, ctx: EvalContext, build: bool = True) -> tuple[Path | None, str]:
        """(pack folder, label recorded in results); `build=False` (the run's preflight) builds no tiny pack
        and gives (None, a description) for it."""
        from unifybench.models.weights import override, tiny_folder
        explicit = override(ctx, "face")          # --model face= wins over every preset, "tiny" included
        pack, root = self.params["pack"], explicit or self.params["root"]
        if explicit and pack == "tiny":
            pack = "antelopev2"
        if not explicit and (pack == "tiny" or (not root and ctx.tiny and not self._is_path(pack))):
            if not build:
                from unifybench.models.weights import TINY_PLACE
                from unifybench.models.tiny_cache import tiny_root
                return None, TINY_PLACE.format(setting="tiny", root=tiny_root(ctx.cache_dir))
            return tiny_folder("face", ctx.cache_dir), "tiny"
        if self._is_path(pack):
            return Path(pack).expanduser(), str(pack)
        if pack not in PACKS:
            raise UserError(f"face: unknown pack {pack!r} (known: {', '.join(PACKS)}, or a path to a pack folder)")
        if root:
            root = Path(root).expanduser()
            for cand in (root / "models" / pack, root / pack):
                if cand.is_dir():
                    return cand, pack
            if any(root.glob("*.onnx")):     # --model face=<the pack folder itself>
                return root, f"{pack}:{root.name}"
            raise UserError(f"face: no {pack} pack under {root} (expected {root / 'models' / pack}/ with the "
                            f"pack's .onnx files); nothing is downloaded")
        default = Path("~/.insightface/models").expanduser() / pack
        if default.is_dir() and any(default.glob("*.onnx")):
            return default, pack
        raise UserError(f"face needs the insightface {pack} pack as a local folder: pass --model face=ROOT "
                        f"(holding models/{pack}/*.onnx) or put it in ~/.insightface/models/{pack}/, or run "
                        f"the tiny preset; nothing is downloaded")

    @staticmethod
    def _is_path(pack: str) -> bool:
        return isinstance(pack, str) and ("/" in pack or pack.startswith(".") or pack.startswith("~"))

    def model(self, ctx: EvalContext):
        from unifybench.models.encoders.face import get_face_app
        if self._app is None:
            pack_dir, self._pack_label = self.resolve_pack(ctx)
            self._app = get_face_app(pack_dir, device=ctx.device, providers=self.params["providers"],
                                     det_size=tuple(self.params["det_size"]), det_thresh=self.params["det_thresh"])
            self._cache_dir = ctx.cache_dir
            if self._app.cpu_fallback():
                log.warning("face: onnxruntime did not apply %s (applied: %s): running on CPU",
                            self._app.requested_providers, self._app.applied_providers())
        return self._app

    def environment(self) -> dict[str, Any]:
        if self._app is None:
            return {}
        return {"pack": self._pack_label, "preset": self.preset, "face_select": self.params["face_select"],
                "no_face": self.params["no_face"], "pre_resize": self.params["pre_resize"], "dtype": "float32",
                "device": "cuda" if self._app.requested_providers[0] != "CPUExecutionProvider" else "cpu",
                **self._app.describe()}

    # --- one image -----------------------------------------------------------------------------------------
    def face_of(self, app, path: Path) -> tuple[np.ndarray | None, dict[str, Any]]:
        """(normed embedding [D] float64 or None, detail) of the selected face of an image file.
        Raises OSError / PIL errors for unreadable images."""
        from PIL import Image
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        p = self.params
        key = (app.fingerprint(self._cache_dir), p["face_select"], p["pre_resize"], digest)
        with _MEMO_LOCK:
            hit = _MEMO.get(key)
        if hit is not None:
            return hit[0], dict(hit[1])
        with Image.open(io.BytesIO(data)) as im:
            rgb = to_rgb(im, path)   # 16-bit greyscale scaled to 8 bits, never clipped to white
        if p["pre_resize"] == "unictokens":
            rgb = unictokens_resize(rgb)
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # skimage's SimilarityTransform.estimate deprecation
            faces = app.faces(bgr)
        face = select_face(faces, p["face_select"])
        detail: dict[str, Any] = {"n_faces": len(faces)}
        emb = None
        if face is not None:
            emb = np.asarray(face.normed_embedding, dtype=np.float64)
            detail["det_score"] = round(float(face.det_score), 6)
            detail["face_bbox"] = [round(float(v), 2) for v in face.bbox]
        with _MEMO_LOCK:
            if len(_MEMO) > 20_000:
                _MEMO.clear()
            _MEMO[key] = (emb, dict(detail))
        return emb, detail

    # --- scoring ----------------------------------------------------------------------------------------------
    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        p = self.params
        if p["categories"] is not None and concept.category not in p["categories"]:
            self._skipped.add(concept.name)
            return []
        out, pending = collect_generated(concept, items, predictions, self.tasks)
        if not pending:
            return out
        refs = list(concept.train_images if p["references"] == "train" else concept.test_images)
        if not refs:
            for sample, _, _ in pending:
                sample.failed = f"concept has no {p['references']} reference images"
            return out
        app = self.model(ctx)
        ref_embs = []
        for ref in refs:
            try:
                emb, _ = self.face_of(app, ref)
            except OSError as e:
                raise DataError(ref, f"cannot read reference image ({e.strerror or e})") from None
            except Exception as e:
                raise DataError(ref, f"cannot load reference image ({type(e).__name__}: {e})") from None
            if emb is not None:
                ref_embs.append(emb)
        self._stats[concept.name] = {"n_reference": len(refs), "n_no_face_reference": len(refs) - len(ref_embs)}
        R = np.stack(ref_embs) if ref_embs else None
        for sample, _, rel in pending:
            try:
                emb, detail = self.face_of(app, Path(ctx.run_dir) / rel)
            except Exception as e:
                sample.failed = f"cannot load image {rel}: {type(e).__name__}: {e}"
                continue
            sample.detail.update(detail)
            sample.detail["no_face"] = emb is None
            if R is None:
                sample.failed = "no reference image has a detectable face"
                continue
            sample.detail["n_reference_faces"] = len(ref_embs)
            if emb is None:
                if p["no_face"] == "zero":
                    sample.score = 0.0
                else:
                    sample.failed = NO_FACE_REASON
                continue
            sample.score = float(np.mean(R @ emb))
        return out

    def score_missing(self, concept: Concept, items: list[Item], ctx: EvalContext) -> list[SampleScore]:
        if self.params["categories"] is not None and concept.category not in self.params["categories"]:
            return []   # a concept this evaluator does not score
        return super().score_missing(concept, items, ctx)

    def extra_aggregates(self, scores_by_concept: dict[str, list[SampleScore]]) -> dict[str, Any]:
        """No-face counts and detection rates beside the value (over the concepts scored)."""
        analysed = [s for scores in scores_by_concept.values() for s in scores if "no_face" in s.detail]
        no_gen = sum(1 for s in analysed if s.detail["no_face"])
        n_ref = sum(self._stats.get(c, {}).get("n_reference", 0) for c in scores_by_concept)
        no_ref = sum(self._stats.get(c, {}).get("n_no_face_reference", 0) for c in scores_by_concept)
        return {"n_no_face_generated": no_gen, "n_no_face_reference": no_ref,
                "detection_rate_generated": (len(analysed) - no_gen) / len(analysed) if analysed else None,
                "detection_rate_reference": (n_ref - no_ref) / n_ref if n_ref else None,
                "no_face_policy": self.params["no_face"],
                "n_concepts_not_in_categories": sum(1 for c in scores_by_concept if c in self._skipped)}
