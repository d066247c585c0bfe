"""Knowledge-driven T2I score (UnifyBench "T2I Score"): does a generated image show the concept's facts?

For every generated image of a ``knowledge_gen`` item, one judge request (prompt ``t2i-v1``, written for
this project) carries the image, the facts of the item (``Item.facts``, the concept's ``extra_info`` the
prompt is about) and the generation prompt, and gets back 0, 0.5 or 1.

The concept: UnifyBench writes it as ``<name>`` in facts and prompts, and the UniCTokens judge saw it that
way; so do we (``concept_as`` = ``"<{name}>"``), and the request also says once what kind of thing it is
(``"<bo> is a dog."``, from the concept's class noun) so the judge knows what to look for. The concept's
visual description (``info``) is not sent: the score is about the facts, not about identity.

Differences from the reference script, on purpose: every listed image is scored (not 4 drawn at random
without a seed; ``max_images`` keeps the first k), each request is a fresh conversation (the reference
kept one ever-growing history), image files are sent as they are (PNG/JPEG/WebP/GIF; other formats are
converted to PNG) rather than re-encoded as JPEG, and an image that cannot be read or a reply that is
not a score is a failed sample. Aggregation as the reference: mean over the images of a prompt, mean
over prompts per concept, mean over concepts.

Preset ``unictokens``: prompt ``t2i-unictokens-paraphrase-v1``, **our paraphrase** of the reference judging
protocol: the judge sees the concept's name, its ``info`` and its extra info (space-joined, as the script
writes them) and the raw prompt, with one image per request, four images per prompt (the first four; the
script draws four at random without a seed), and any number in [0, 1] in the reply is a score. A paraphrase
on another judge model is not the paper's judge; its numbers say so by their preset.
"""
from __future__ import annotations

import io
from pathlib import Path

from unifybench.data.schema import KNOWLEDGE_GEN, PLACEHOLDER, Concept, Item
from unifybench.evaluators.base import SampleScore
from unifybench.evaluators.judge_qa import JudgeEvaluator, reply_parser
from unifybench.images import SIXTEEN_BIT_MODES, to_rgb
from unifybench.prompts import concept_text

T2I_PROMPTS = {
    "t2i-v1": {
        "system": (
            "You check generated images against known facts about a personal subject (a person, a pet or "
            "an object), which is referred to by a name in angle brackets. You receive what kind of thing "
            "the subject is, a list of facts about it that cannot be seen in ordinary photos of it, the "
            "text prompt the image was generated from, and the image. Decide how well the image shows "
            "the facts that the prompt calls for. Do not grade image quality, style or composition.\n"
            "Reply with a single number and nothing else:\n"
            "1 - the image clearly shows those facts;\n"
            "0.5 - it shows them only in part (some of them, or only roughly);\n"
            "0 - it does not show them, or shows something that contradicts them.\n"
            "For instance, if a fact says <kiki> wears a green raincoat when it rains and the prompt is "
            "\"<kiki> walking in the rain\", an image of the subject in a green raincoat gets 1, in a "
            "raincoat of another colour 0.5, and without a raincoat 0."
        ),
        "user": "Subject: {subject}\nFacts about the subject:\n{facts}\n"
                "Prompt the image was generated from: {prompt}\n"
                "Score the attached image (1, 0.5 or 0):",
    },
    # Preset `unictokens`: OUR PARAPHRASE of the protocol of UniCTokens eval/4o_judge_t2i.py (its inputs: the
    # concept's name, info and extra info, the raw prompt, one image per request; its scale 0 / 0.5 / 1 for
    # no, partial, full match with the extra info; its reply: the score alone). Not its wording.
    "t2i-unictokens-paraphrase-v1": {
        "system": (
            "You are an expert judge of generated images. You are told about a concept: its name, a "
            "description, and extra information about it. Check whether the image agrees with the extra "
            "information, as far as the prompt it was generated from calls for it. Score 0 when it does "
            "not, 0.5 when it agrees in part, 1 when it agrees fully. For instance, if the extra information "
            "says <lulu> has a red dress and the prompt is \"A photo of <lulu> wearing her dress.\", an image "
            "of her in a red dress gets 1 and one without a red dress gets 0. Give the score and no "
            "explanation."
        ),
        "user": "Concept:\nname: {name}\ninfo: {info}\nextra_info: {extra_info}\n"
                "Prompt of the generated image:\n{prompt}\n"
                "Score the image by these rules, with no explanation.\nScore:",
    },
}

_SENT_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def load_image_for_judge(path: Path) -> tuple[bytes, str]:
    """(bytes, mime type) of an image file, after checking that it decodes; raises on a bad file."""
    from PIL import Image
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format
        im.load()
        wide = im.mode in SIXTEEN_BIT_MODES or im.mode in ("I", "F")
        if fmt in _SENT_AS_IS and not wide:
            return data, _SENT_AS_IS[fmt]
        buf = io.BytesIO()   # 16-bit greyscale scaled to 8 bits (the judge never sees a clipped white image)
        (to_rgb(im, path) if wide else im.convert("RGBA" if "A" in im.getbands() else "RGB")).save(buf, format="PNG")
        return buf.getvalue(), "image/png"


class KnowledgeT2I(JudgeEvaluator):
    name = "t2i_score"
    version = "1"
    tasks = frozenset({KNOWLEDGE_GEN})
    prompt_versions = tuple(T2I_PROMPTS)
    presets = {"default": {},
               "unictokens": {"prompt_version": "t2i-unictokens-paraphrase-v1", "parse": "unit_float",
                              "max_images": 4}}
    defaults = {**JudgeEvaluator.defaults,
                "prompt_version": "t2i-v1",        # the judge prompt, by its versioned name
                "max_images": None,                # judge only the first k images of an item; None: all
                }

    def messages(self, concept: Concept, item: Item, image_url: str) -> list[dict]:
        prompt = T2I_PROMPTS[self.params["prompt_version"]]
        fmt = self.params["concept_as"]
        name = concept_text(PLACEHOLDER, concept, fmt)
        if "{extra_info}" in prompt["user"]:   # the UniCTokens paraphrase: name, info, extra info (space-joined)
            text = prompt["user"].format(
                name=name, info=concept_text(concept.info, concept, fmt).strip(),
                extra_info=" ".join(concept_text(f, concept, fmt).strip() for f in concept.extra_info),
                prompt=concept_text(item.prompt, concept, fmt).strip())
            return [{"role": "system", "content": prompt["system"]},
                    {"role": "user", "content": [{"type": "text", "text": text},
                                                 {"type": "image_url", "image_url": {"url": image_url}}]}]
        subject = f"{name} is a {concept.class_noun}." if concept.class_noun else name
        facts = "\n".join(f"- {concept_text(f, concept, fmt).strip()}" for f in item.facts)
        text = prompt["user"].format(subject=subject, facts=facts,
                                     prompt=concept_text(item.prompt, concept, fmt).strip())
        return [{"role": "system", "content": prompt["system"]},
                {"role": "user", "content": [{"type": "text", "text": text},
                                             {"type": "image_url", "image_url": {"url": image_url}}]}]

    def judge(self, concept, items, predictions, ctx, client) -> list[SampleScore]:
        from unifybench.judge import JudgeRequest, image_data_url
        parse_score = reply_parser(self.params["parse"])
        out: list[SampleScore | None] = []
        requests, slots = [], []
        limit = self.params["max_images"]
        for item in items:
            pred = predictions.get(item.id)
            reason = ("no prediction" if pred is None else f"model error: {pred.error}" if pred.error is not None
                      else "no images" if not pred.images else "item has no facts" if not item.facts else None)
            if reason:
                out.append(SampleScore(item.id, concept.name, None, failed=reason, detail={"item": item.id}))
                continue
            images = pred.images if limit is None else pred.images[:int(limit)]
            for k, rel in enumerate(images):
                sid = f"{item.id}#{k}"
                path = Path(rel) if Path(rel).is_absolute() else Path(ctx.run_dir) / rel
                try:
                    data, mime = load_image_for_judge(path)
                except Exception as e:  # noqa: BLE001 - any unreadable image is one failed sample
                    out.append(SampleScore(sid, concept.name, None, detail={"item": item.id},
                                           failed=f"image not readable: {rel} ({type(e).__name__})"))
                    continue
                slots.append(len(out))
                out.append(None)
                requests.append(JudgeRequest(self.messages(concept, item, image_data_url(data, mime)),
                                             self.params["prompt_version"], parse_score, label=sid))
        for slot, req, res in zip(slots, requests, client.ask_many(requests, self.params["workers"])):
            item_id = req.label.rsplit("#", 1)[0]
            if res.ok:
                out[slot] = SampleScore(req.label, concept.name, float(res.value),
                                        detail={"item": item_id, "judge_reply": res.reply, "cached": res.cached})
            else:
                detail = {"item": item_id, **({"judge_reply": res.reply} if res.reply is not None else {})}
                out[slot] = SampleScore(req.label, concept.name, None, failed=res.error, detail=detail)
        return out  # type: ignore[return-value]

    def concept_value(self, scores: list[SampleScore]) -> float | None:
        """Mean over prompts of the mean over that prompt's scored images."""
        per_item: dict[str, list[float]] = {}
        for s in scores:
            if s.failed is None:
                per_item.setdefault(s.detail.get("item", s.id.rsplit("#", 1)[0]), []).append(s.score)
        means = [sum(v) / len(v) for v in per_item.values()]
        return sum(means) / len(means) if means else None
