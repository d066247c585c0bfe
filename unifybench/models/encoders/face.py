"""ArcFace face embeddings through insightface's `FaceAnalysis` on onnxruntime, from a LOCAL model pack.

A pack is a folder of ONNX files (`buffalo_l`: det_10g.onnx + w600k_r50.onnx + ...; `antelopev2`:
scrfd_10g_bnkps.onnx + glintr100.onnx + ...). insightface routes each file by its input/output shapes
(`model_zoo.ModelRouter`): >= 5 outputs is a detector (SCRFD), a square input >= 112 and divisible by 16
with one output is an ArcFace recognizer. We pass the pack *folder path* as `name` (insightface 2.1 accepts
a directory), so nothing is ever downloaded, and load only detection + recognition.

`det_size` is always set explicitly (insightface 1.0+ defaults to detecting at both 128 and 640 and
merging; 0.7.3, which the papers used, detects at 640x640). The onnxruntime providers each session really
runs on are read back with `session.get_providers()`: onnxruntime silently drops CUDA when CUDA/cuDNN do not
match onnxruntime-gpu, and only that list shows it.

`tiny_face_pack()` builds (once, atomically) two tiny ONNX files that insightface routes as a detector and
a recognizer, so the whole face path runs for real on CPU in tests (see `_build_tiny_detector`).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from unifybench.models.tiny_cache import build_once, tiny_root
from typing import Any

import numpy as np

from unifybench.errors import UserError
from unifybench.models.safe_weights import pickle_files, refuse_pickle

log = logging.getLogger(__name__)

TINY_NAME = "face-v1"   # bump when the tiny files change
TINY_DETECTOR = "det_tiny.onnx"
TINY_RECOGNIZER = "rec_tiny.onnx"
TINY_EMBED_DIM = 512
# ArcFace's 5-point template on a 112x112 crop (insightface utils/face_align.py arcface_dst).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def default_providers(device: str) -> list:
    """The onnxruntime providers asked for on `device` ("cpu", "cuda", "cuda:1")."""
    if str(device).startswith("cuda"):
        _, _, idx = str(device).partition(":")
        cuda = ("CUDAExecutionProvider", {"device_id": int(idx)}) if idx else "CUDAExecutionProvider"
        return [cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _provider_name(p) -> str:
    return str(p[0] if isinstance(p, (tuple, list)) else p)


@dataclass
class FaceApp:
    """A prepared FaceAnalysis (detection + recognition) and what it really runs on."""

    app: Any
    pack_dir: Path
    files: list[Path]
    requested_providers: list
    det_size: tuple[int, int]
    det_thresh: float
    _fingerprint: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def faces(self, image_bgr: np.ndarray) -> list:
        """insightface `Face` objects (bbox, kps, det_score, embedding), highest detection score first."""
        with self._lock:   # onnxruntime sessions are thread-safe, the SCRFD session pool setup is not ours to test
            return self.app.get(image_bgr)

    def applied_providers(self) -> dict[str, list[str]]:
        """{"detection": [...], "detection@640x640": [...], "recognition": [...]}: what each session runs on."""
        out: dict[str, list[str]] = {}
        for task, model in self.app.models.items():
            out[task] = list(model.session.get_providers())
            if task == "detection":
                try:
                    sessions = model.resolution_sessions
                except Exception:   # pragma: no cover - an insightface without per-size sessions
                    sessions = {}
                for (w, h), s in sorted(sessions.items()):
                    if s is not model.session:
                        out[f"detection@{w}x{h}"] = list(s.get_providers())
        return out

    def cpu_fallback(self) -> bool:
        """True when a non-CPU provider was asked for and some session does not run on it."""
        wanted = [_provider_name(p) for p in self.requested_providers if _provider_name(p) != "CPUExecutionProvider"]
        if not wanted:
            return False
        return any(wanted[0] not in applied for applied in self.applied_providers().values())

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        if self._fingerprint is None:
            from unifybench.store import canonical_hash, file_sha256
            self._fingerprint = canonical_hash({
                "files": {p.name: file_sha256(p, cache_dir) for p in self.files},
                "det_size": list(self.det_size), "det_thresh": self.det_thresh,
                "providers": [_provider_name(p) for p in self.requested_providers]})
        return self._fingerprint

    def describe(self) -> dict:
        import onnxruntime
        rec = self.app.models.get("recognition")
        det = self.app.models.get("detection")
        return {"pack_dir": str(self.pack_dir), "files": [str(p) for p in self.files],
                "detector": Path(det.model_file).name if det is not None else None,
                "recognizer": Path(rec.model_file).name if rec is not None else None,
                "recognizer_input_mean_std": [rec.input_mean, rec.input_std] if rec is not None else None,
                "det_size": list(self.det_size), "det_thresh": self.det_thresh,
                "requested_providers": [_provider_name(p) for p in self.requested_providers],
                "providers": self.applied_providers(), "cpu_fallback": self.cpu_fallback(),
                "available_providers": list(onnxruntime.get_available_providers()),
                "onnxruntime": onnxruntime.__version__}


def load_face_app(pack_dir: str | Path, device: str = "cpu", providers: list | None = None,
                  det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5) -> FaceApp:
    """FaceAnalysis over the ONNX files of a local pack folder, prepared with an explicit `det_size`."""
    pack_dir = Path(pack_dir).expanduser()
    files = sorted(pack_dir.glob("*.onnx")) if pack_dir.is_dir() else []
    pickles = pickle_files(pack_dir) if pack_dir.is_dir() and not files else []
    if pickles:   # insightface reads *.onnx only; a PyTorch ArcFace checkpoint here is named, never opened
        raise refuse_pickle(pickles[0], "face", others=len(pickles) - 1,
                            hint=f"face packs are ONNX files: export the model once with torch.onnx.export in a "
                                 f"trusted environment into {pack_dir.absolute()}/")
    if not files:
        raise UserError(f"face model pack {pack_dir} has no .onnx files (expected e.g. models/antelopev2/ with "
                        f"scrfd_10g_bnkps.onnx + glintr100.onnx, or models/buffalo_l/ with det_10g.onnx + "
                        f"w600k_r50.onnx); nothing is downloaded")
    from insightface.app import FaceAnalysis
    requested = list(providers) if providers else default_providers(device)
    try:
        app = FaceAnalysis(name=str(pack_dir.resolve()), allowed_modules=["detection", "recognition"],
                           providers=requested)
    except AssertionError:
        raise UserError(f"face model pack {pack_dir}: insightface found no detector among "
                        f"{[p.name for p in files]}") from None
    if "recognition" not in app.models:
        raise UserError(f"face model pack {pack_dir}: insightface found no ArcFace recognizer among "
                        f"{[p.name for p in files]}")
    det_size = (int(det_size[0]), int(det_size[1]))
    ctx_id = 0 if str(device).startswith("cuda") else -1   # < 0: insightface pins every session to CPU
    app.prepare(ctx_id=ctx_id, det_thresh=float(det_thresh), det_size=det_size)
    used = [Path(m.model_file) for m in app.models.values()]
    fa = FaceApp(app=app, pack_dir=pack_dir, files=sorted(used), requested_providers=requested,
                 det_size=det_size, det_thresh=float(det_thresh))
    return fa


_LOADED: dict[tuple, FaceApp] = {}
_LOADED_LOCK = threading.Lock()


def get_face_app(pack_dir: str | Path, device: str = "cpu", providers: list | None = None,
                 det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5) -> FaceApp:
    """`load_face_app` once per settings in this process."""
    key = (str(Path(pack_dir).expanduser().resolve()), str(device), repr(providers),
           (int(det_size[0]), int(det_size[1])), float(det_thresh))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_face_app(pack_dir, device, providers, det_size, det_thresh)
        return _LOADED[key]


# ------------------------------------------------------------------------------------------------------
# Tiny random face pack
# ------------------------------------------------------------------------------------------------------
def _complete(folder: Path) -> bool:
    return (folder / TINY_DETECTOR).is_file() and (folder / TINY_RECOGNIZER).is_file()


def tiny_face_pack(cache_dir: Path | None = None) -> Path:
    """A tiny face pack folder (detector + recognizer ONNX), built once under
    `<cache_dir or ~/.cache/unifybench>/tiny/face-v1/`. Deterministic bytes. It measures nothing.

    The detector "finds a face" in each 32x32 cell (of the 640x640 detection input) that is nearly pure red
    or magenta: see `_build_tiny_detector`. Pictures without such a block have no face."""
    def build(tmp: Path) -> None:
        _build_tiny_detector(tmp / TINY_DETECTOR)
        _build_tiny_recognizer(tmp / TINY_RECOGNIZER, seed=0)

    return build_once(tiny_root(cache_dir) / TINY_NAME, build, _complete)


# The tiny detector, in the units SCRFD decodes (per anchor, on the mean R, G, B of a stride-32 cell of the
# detection input, each channel normalised as (pixel - 127.5) / 128 by insightface):
#   score  = sigmoid(10 (R - G) - B - 15)       pure red 0.998, pure magenta 0.982, grey/skin/sky < 1e-3
#   side s = 1.5 + 0.5 B cells                  red: 1 cell (32 px), magenta: 2 cells (64 px)
#   box    = the s x s square centred on the cell, keypoints = ArcFace's template placed in that box
# so a red or magenta 32 px block aligned to the 32 px grid is one face, a magenta one larger but scored
# lower than a red one ("largest" and "first" pick different faces). Strides 8 and 16 never fire.
SCORE_W = (10.0, -10.0, -1.0)
SCORE_B = -15.0
SIDE_W, SIDE_B = 0.5, 1.5          # s = SIDE_B + SIDE_W * B
STRIDES = (8, 16, 32)
ANCHORS = 2


def _tiny_detector_heads() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """1x1 conv weights [C_out, 3] and biases [C_out] of the active (stride 32) level, per head."""
    # distances (left, top, right, bottom) in stride units: left = top = s/2 - 1/2, right = bottom = s/2 + 1/2
    half_w, half_b = SIDE_W / 2, SIDE_B / 2
    box_w = np.array([[0, 0, half_w]] * 4, dtype=np.float64)
    box_b = np.array([half_b - 0.5, half_b - 0.5, half_b + 0.5, half_b + 0.5])
    # keypoint k: anchor + (-left + frac_k * s) cells, frac = template / 112
    frac = ARCFACE_TEMPLATE / 112.0
    kps_w, kps_b = [], []
    for fx, fy in frac:
        for f in (fx, fy):
            kps_w.append([0, 0, f * SIDE_W - half_w])
            kps_b.append(f * SIDE_B - (half_b - 0.5))
    score = (np.array([SCORE_W], dtype=np.float64), np.array([SCORE_B]))
    heads = {"score": score, "bbox": (box_w, box_b), "kps": (np.array(kps_w), np.array(kps_b))}
    return {k: (np.tile(w, (ANCHORS, 1)), np.tile(b, ANCHORS)) for k, (w, b) in heads.items()}


def _build_tiny_detector(path: Path) -> None:
    """An SCRFD-shaped detector: input [1, 3, H, W], 9 outputs (scores, boxes, keypoints at strides 8/16/32,
    2 anchors), each [N, 1] / [N, 4] / [N, 10] with N = H/s * W/s * 2: what insightface's router takes for
    a detector (>= 5 outputs) and SCRFD decodes with keypoints (9 outputs)."""
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, outputs = [], [], []
    active = _tiny_detector_heads()
    widths = {"score": 1, "bbox": 4, "kps": 10}

    def const(name, array, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    for head in ("score", "bbox", "kps"):
        for s in STRIDES:
            pool = f"pool{s}"
            if head == "score":
                nodes.append(helper.make_node("AveragePool", ["input.1"], [pool], name=f"avgpool_{s}",
                                              kernel_shape=[s, s], strides=[s, s]))
            w, b = active[head]
            if s != 32:   # inactive levels: no face ever (score sigmoid(-20))
                w, b = np.zeros_like(w), (np.full_like(b, -20.0) if head == "score" else np.zeros_like(b))
            c = w.shape[0]
            conv = f"{head}_conv{s}"
            nodes.append(helper.make_node("Conv", [pool, const(f"{head}_w{s}", w.reshape(c, 3, 1, 1)),
                                                   const(f"{head}_b{s}", b)], [conv], name=conv))
            src = conv
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [conv], [f"{conv}_sig"], name=f"{conv}_sigmoid"))
                src = f"{conv}_sig"
            nodes.append(helper.make_node("Transpose", [src], [f"{conv}_t"], name=f"{conv}_transpose",
                                          perm=[0, 2, 3, 1]))
            out = f"{head}_{s}"
            nodes.append(helper.make_node("Reshape", [f"{conv}_t", const(f"{head}_shape{s}", [-1, widths[head]],
                                                                         np.int64)], [out], name=f"{conv}_reshape"))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [f"n{s}", widths[head]]))
    graph = helper.make_graph(nodes, "tiny_scrfd", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [1, 3, "height", "width"])], outputs, initializer=inits)
    _save(graph, path)


def _build_tiny_recognizer(path: Path, seed: int = 0) -> None:
    """An ArcFace-shaped recognizer: input [N, 3, 112, 112] raw RGB pixels, one [N, 512] output. It
    normalises the input itself with nodes named `Sub...` and `Mul...` among its first 8 nodes, the mxnet
    export convention insightface detects to feed raw pixels (input mean 0, std 1) instead of
    (pixel - 127.5) / 127.5. Random zero-mean conv (8x8 stride 8) -> tanh -> linear; seeded numpy
    weights, so the embedding follows the texture inside the face box rather than its flat colour."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 1 / np.sqrt(3 * 64), (8, 3, 8, 8))
    conv_w = (conv_w - conv_w.mean(axis=(2, 3), keepdims=True)).astype(np.float32)   # texture, not flat colour
    fc_w = rng.normal(0, 1 / np.sqrt(8 * 14 * 14), (TINY_EMBED_DIM, 8 * 14 * 14)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
             numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale"),
             numpy_helper.from_array(conv_w, "conv_w"), numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
             numpy_helper.from_array(fc_w, "fc_w"),
             numpy_helper.from_array(np.zeros(TINY_EMBED_DIM, np.float32), "fc_b")]
    nodes = [helper.make_node("Sub", ["input.1", "mean"], ["x0"], name="Sub_0"),
             helper.make_node("Mul", ["x0", "scale"], ["x1"], name="Mul_1"),
             helper.make_node("Conv", ["x1", "conv_w", "conv_b"], ["x2"], name="conv_2", strides=[8, 8]),
             helper.make_node("Tanh", ["x2"], ["x3"], name="tanh_3"),
             helper.make_node("Flatten", ["x3"], ["x4"], name="flatten_4", axis=1),
             helper.make_node("Gemm", ["x4", "fc_w", "fc_b"], ["embedding"], name="fc1", transB=1)]
    graph = helper.make_graph(nodes, "tiny_arcface",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", TINY_EMBED_DIM])],
                              initializer=inits)
    _save(graph, path)


def _save(graph, path: Path) -> None:
    import onnx
    from onnx import helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="unifybench-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
