"""The LLM-judge client: one fresh conversation per request, retries, a disk cache, counters.

Any OpenAI-compatible server works (`--judge-base-url`, `--judge-model`). The API key is read from the
environment only (``UNIFYBENCH_JUDGE_API_KEY``, then ``OPENAI_API_KEY``); it is never logged, never put in
an error message (every message that leaves this module is scrubbed of it) and never written to a file.

* **No history.** Every :meth:`JudgeClient.ask` sends exactly the messages it is given (a system and a
  user turn), so a score never depends on earlier requests (the UniCTokens T2I judge kept one growing
  conversation; see the project notes on UniCTokens, section 2.8).
* **Deterministic settings.** Temperature 0 and the run's seed are sent with every request.
* **Retries.** The openai client's own retries are off (``max_retries=0``); this module retries HTTP 429,
  5xx, timeouts and connection errors with exponential backoff (honouring ``Retry-After``), and gives up
  on any other error at once. Every reply that cannot be read (a 200 whose body is not JSON, no choices,
  no text, text the caller's parser rejects) is one failed sample, counted, never retried, never cached.
* **Cache.** Good parsed replies are appended to a JSONL write-ahead log (flushed and fsynced per line,
  replayed into an in-memory index on start; a torn line is skipped, and the next append first ends it
  with a newline so that it starts a clean line). The key is the sha256 of
  (judge model, prompt version, sampling settings, request content), where every embedded image is
  replaced by the sha256 of its bytes. A rerun or a resumed run makes no call for a cached request, and
  identical requests in one batch (:meth:`JudgeClient.ask_many`) are sent once, however many threads.
* **Circuit breaker.** After ``max_consecutive_failures`` requests in a row get no reply (after their
  retries), or as soon as the server refuses the key (401/403), :class:`JudgeUnavailable` stops the run
  instead of scoring nothing for hours. Unparsable replies do not count: the server is working.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from unifybench.errors import UserError

API_KEY_ENV = ("UNIFYBENCH_JUDGE_API_KEY", "OPENAI_API_KEY")
CACHE_SCHEMA = 1
_NO_KEY = "no-key"  # the openai client needs a non-empty key; local servers usually ignore it
_DATA_URL = re.compile(r"^data:([\w.+/-]+);base64,(.*)$", re.DOTALL)


class JudgeUnavailable(UserError):
    """The judge server failed too many requests in a row (down, wrong URL, wrong key...)."""


@dataclass
class JudgeResult:
    value: Any = None            # what the parser returned (None when the request failed)
    reply: str | None = None     # the judge's raw reply text, when one came back
    error: str | None = None     # why there is no value (already scrubbed of the key)
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class JudgeRequest:
    messages: list[dict]
    prompt_version: str
    parse: Callable[[str], Any]   # returns the parsed value, or None when the reply is unusable
    label: str | None = None      # e.g. the item id; stored beside the cached reply for inspection


def image_data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def request_key(model: str, prompt_version: str, settings: dict, messages: list[dict]) -> str:
    """sha256 of everything that determines a reply; embedded images enter as the hash of their bytes."""
    doc = {"schema": CACHE_SCHEMA, "model": model, "prompt_version": prompt_version, "settings": settings,
           "messages": _hash_images(messages)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _hash_images(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _hash_images(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_hash_images(v) for v in obj]
    if isinstance(obj, str):
        m = _DATA_URL.match(obj)
        if m:
            return f"image:{m.group(1)}:sha256:{hashlib.sha256(base64.b64decode(m.group(2))).hexdigest()}"
    return obj


def public_url(url: str) -> str:
    """The URL without user info, query or fragment (those can carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class JudgeCache:
    """JSONL write-ahead log + in-memory index of good replies. Never pickle; safe to append from threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._index: dict[str, dict] = {}
        self.skipped_lines = 0
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self._index[rec["key"]] = rec
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1   # a torn line from a crash; the request is simply redone

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._index.get(key)

    def put(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+", encoding="utf-8") as f:
                _lock_file(f)
                try:
                    if _torn_tail(f):       # a kill mid-append left half a line: end it, so this one is whole
                        line = "\n" + line
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
                finally:
                    _unlock_file(f)
            self._index[record["key"]] = record


def _torn_tail(f) -> bool:
    """True when the (locked, append-mode) file does not end with a newline."""
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        return False
    return os.pread(f.fileno(), 1, size - 1) != b"\n"


def _lock_file(f) -> None:
    try:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass


def _unlock_file(f) -> None:
    try:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except (ImportError, OSError):
        pass


class JudgeClient:
    """Chat-completions judge over the `openai` package with retries, a disk cache and counters."""

    def __init__(self, base_url: str, model: str, seed: int = 0, cache_dir: Path | str | None = None,
                 api_key_env: Sequence[str] = API_KEY_ENV, timeout: float = 60.0, max_retries: int = 6,
                 backoff: float = 1.0, max_backoff: float = 60.0, max_tokens: int = 16,
                 temperature: float = 0.0, max_consecutive_failures: int = 8):
        if not base_url:
            raise UserError("the judge needs a server: pass --judge-base-url URL (or --judge none)")
        if not model:
            raise UserError("the judge needs a model name: pass --judge-model NAME")
        self.base_url = base_url
        self.model = model
        self.seed = int(seed)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self._key_env = next((name for name in api_key_env if os.environ.get(name)), None)
        self._secret = os.environ.get(self._key_env) if self._key_env else None
        self.cache = JudgeCache(Path(cache_dir) / "judge" / "replies.jsonl") if cache_dir is not None else None
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)   # backoff jitter; never touches the global RNG
        self._consecutive_failures = 0
        self._stopped: str | None = None      # why the circuit breaker stopped all further requests
        self._counts = {"calls": 0, "requests": 0, "retries": 0, "cache_hits": 0, "failures": 0,
                        "unparsable": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._client = None

    # ---- public API

    @property
    def settings(self) -> dict:
        """Sampling settings sent with every request (part of the cache key)."""
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}

    def ask(self, messages: list[dict], prompt_version: str, parse: Callable[[str], Any],
            label: str | None = None) -> JudgeResult:
        """One request in a fresh conversation; `parse(reply)` returns a value or None (unusable)."""
        if self._stopped is not None:
            raise JudgeUnavailable(self._stopped)
        key = request_key(self.model, prompt_version, self.settings, messages)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                return JudgeResult(value=hit["value"], reply=hit["reply"], cached=True)
        self._count("calls")
        reply, error = self._complete(messages)
        if error is not None:
            return JudgeResult(error=error)   # already counted by _fail
        try:
            value = parse(reply)
        except Exception:  # noqa: BLE001 - a parser that raises means "not a usable reply"
            value = None
        if value is None:
            self._count("failures")
            self._count("unparsable")
            return JudgeResult(reply=self._scrub(reply), error=f"unparsable judge reply: {self._scrub(reply)[:200]!r}")
        if self.cache is not None:
            self.cache.put({"key": key, "model": self.model, "prompt_version": prompt_version,
                            "reply": self._scrub(reply), "value": value, "label": label,
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return JudgeResult(value=value, reply=self._scrub(reply))

    def ask_many(self, requests: Sequence[JudgeRequest], workers: int = 1) -> list[JudgeResult]:
        """`ask` for each request (in parallel threads when workers > 1), results in request order.

        Identical requests (one cache key, e.g. two generated images with the same bytes) are sent once and
        the copies get its result, marked cached: parallel threads would otherwise all miss the cache and pay
        for the same reply, and a failed reply is never asked twice either way."""
        def one(r: JudgeRequest) -> JudgeResult:
            return self.ask(r.messages, r.prompt_version, r.parse, r.label)
        first: dict[tuple, int] = {}
        same = [first.setdefault((request_key(self.model, r.prompt_version, self.settings, r.messages), r.parse), n)
                for n, r in enumerate(requests)]
        distinct = [r for n, r in enumerate(requests) if same[n] == n]
        if workers <= 1 or len(distinct) <= 1:
            answers = [one(r) for r in distinct]
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                answers = [f.result() for f in [pool.submit(one, r) for r in distinct]]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)   # a dead server: do not work through the queue
                raise
            finally:
                pool.shutdown(wait=True)
        answer_of = dict(zip([n for n in range(len(requests)) if same[n] == n], answers))
        out = []
        for n, origin in enumerate(same):
            res = answer_of[origin]
            if origin != n and res.ok:
                self._count("cache_hits")
                res = JudgeResult(value=res.value, reply=res.reply, cached=True)
            out.append(res)
        return out

    def stats(self) -> dict:
        """Counters for results.json: calls (requests not answered from the cache), HTTP requests incl.
        retries, cache hits, failures (incl. unparsable replies) and token totals. Never the key."""
        with self._lock:
            out = dict(self._counts)
        out.update({"model": self.model, "base_url": public_url(self.base_url),
                    "api_key_env": self._key_env, "settings": self.settings,
                    "cache": str(self.cache.path) if self.cache is not None else None,
                    "cache_entries": len(self.cache) if self.cache is not None else 0})
        return out

    # ---- internals

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _scrub(self, text: str) -> str:
        if self._secret and text:
            text = text.replace(self._secret, "***")
        return text

    def _openai(self):
        with self._lock:
            if self._client is None:
                import openai
                self._client = openai.OpenAI(base_url=self.base_url, api_key=self._secret or _NO_KEY,
                                             timeout=self.timeout, max_retries=0)
            return self._client

    def draw(self, prompt: str, references: Sequence[bytes], n: int, size: str, prompt_version: str,
             label: str | None = None, model: str | None = None) -> JudgeResult:
        """`n` images from the Images API (`images.generate`, or `images.edit` with the reference photos),
        stored as PNG files under the cache folder; `value` is their paths. The API takes no seed: the
        disk cache is what makes a rerun reproduce them (a rerun makes no call)."""
        model = model or self.model
        if self._stopped is not None:
            raise JudgeUnavailable(self._stopped)
        settings = {"n": int(n), "size": size}
        request = [{"prompt": prompt, "references": [hashlib.sha256(r).hexdigest() for r in references]}]
        key = request_key(model, prompt_version, settings, request)
        folder = (self.cache.path.parent if self.cache is not None else Path(".")) / "images"
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and all((folder / f"{h}.png").is_file() for h in hit["value"]):
                self._count("cache_hits")
                return JudgeResult(value=[str(folder / f"{h}.png") for h in hit["value"]], cached=True)
        self._count("calls")

        def call(client):
            if references:
                files = [(f"reference_{k}.png", data, "image/png") for k, data in enumerate(references)]
                return client.images.edit(model=model, image=files, prompt=prompt, n=int(n), size=size)
            return client.images.generate(model=model, prompt=prompt, n=int(n), size=size)

        resp, error = self._with_retries(call)
        if error is not None:
            return JudgeResult(error=error)
        blobs = [base64.b64decode(d.b64_json) for d in (getattr(resp, "data", None) or []) if getattr(d, "b64_json", None)]
        if len(blobs) != int(n):
            self._count("failures")
            return JudgeResult(error=f"image API returned {len(blobs)} base64 images, expected {n} "
                                     f"(URL-only replies are not fetched)")
        hashes = []
        for data in blobs:   # content-addressed, written atomically: a crash leaves no half image
            h = _store_png(folder, data)
            if h is None:
                self._count("failures")
                return JudgeResult(error="image API returned bytes that are not an image")
            hashes.append(h)
        if self.cache is not None:
            self.cache.put({"key": key, "model": model, "prompt_version": prompt_version, "reply": None,
                            "value": hashes, "label": label, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return JudgeResult(value=[str(folder / f"{h}.png") for h in hashes])

    def _complete(self, messages: list[dict]) -> tuple[str | None, str | None]:
        """(reply, None) or (None, reason)."""
        resp, error = self._with_retries(lambda client: client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature, seed=self.seed,
            max_tokens=self.max_tokens, n=1, stream=False))
        if error is not None:
            return None, error
        try:   # the client builds replies without validating them: any field may be missing or mistyped
            choices = getattr(resp, "choices", None) or []
            content = choices[0].message.content if choices and choices[0].message else None
        except (AttributeError, IndexError, KeyError, TypeError):
            content = None
        if not isinstance(content, str):
            self._count("failures")
            self._count("unparsable")
            return None, "judge reply holds no text (no choices or no message content)"
        return content, None

    def _with_retries(self, call: Callable[[Any], Any]) -> tuple[Any, str | None]:
        """(response, None) or (None, reason) for `call(client)`. Retries 429, 5xx, timeouts and connection errors."""
        import openai
        client = self._openai()
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            try:
                resp = call(client)
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                # APITimeoutError is a subclass of APIConnectionError; both are worth another try.
                last = f"{type(e).__name__}: {e}"
            except openai.APIStatusError as e:
                status = e.status_code
                last = f"HTTP {status}: {e.message}"
                if status != 429 and status < 500:
                    return None, self._fail(last, fatal=status in (401, 403))
                retry_after = _retry_after(e)
            except openai.OpenAIError as e:   # malformed response and the like: do not retry
                return None, self._fail(f"{type(e).__name__}: {e}")
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                # An HTTP 200 the client cannot read (an HTML error page from a proxy: JSONDecodeError is a
                # ValueError). One failed sample, not retried; a server that only sends these trips the breaker.
                return None, self._fail(f"unreadable judge reply ({type(e).__name__}: {e})")
            else:
                usage = getattr(resp, "usage", None)
                if usage is not None:
                    self._count("prompt_tokens", int(getattr(usage, "prompt_tokens", 0) or 0))
                    self._count("completion_tokens", int(getattr(usage, "completion_tokens", 0) or 0))
                with self._lock:
                    self._consecutive_failures = 0
                return resp, None
            if attempt < self.max_retries:
                delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + self._rng.random() / 2)
                if retry_after is not None:
                    delay = min(self.max_backoff, max(delay, retry_after))
                time.sleep(delay)
        return None, self._fail(f"judge request failed after {self.max_retries + 1} attempts: {last}")

    def _fail(self, reason: str, fatal: bool = False) -> str:
        """A request that got no reply. Too many in a row (or a refused key) stop the run."""
        reason = self._scrub(reason)[:300]
        with self._lock:
            self._counts["failures"] += 1
            self._consecutive_failures += 1
            tripped = self._consecutive_failures >= self.max_consecutive_failures
        if fatal:
            self._stopped = (f"judge server {public_url(self.base_url)} refused the request "
                             f"(check UNIFYBENCH_JUDGE_API_KEY / OPENAI_API_KEY): {reason}")
        elif tripped:
            self._stopped = (f"judge server {public_url(self.base_url)} failed "
                             f"{self.max_consecutive_failures} requests in a row; last: {reason}")
        if self._stopped is not None:
            raise JudgeUnavailable(self._stopped)
        return reason


def _store_png(folder: Path, data: bytes) -> str | None:
    """`data` (any image format) saved as `<folder>/<sha256 of data>.png`; None when it is not an image."""
    import io

    from PIL import Image
    h = hashlib.sha256(data).hexdigest()
    dest = folder / f"{h}.png"
    if dest.is_file():
        return h
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
    except OSError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    im.save(tmp, format="PNG")
    os.replace(tmp, dest)
    return h


def _retry_after(e) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------- score parsing

_SCORE = re.compile(r"^(?:score\s*[:：]*\s*)?(1(?:\.0*)?|0?\.50*|0(?:\.0*)?)\.?$", re.IGNORECASE)


def parse_score(reply: str) -> float | None:
    """A reply that is only one of 0, 0.5, 1 (``"1.0"``, ``"Score: 0.5"``, ``"**1**"`` are fine);
    anything else, including other numbers and explanations, is None (a failed sample, never a score)."""
    if not isinstance(reply, str):
        return None
    text = reply.strip().strip("*`\"' ").strip()
    m = _SCORE.match(text)
    if not m:
        return None
    value = float(m.group(1))
    return value if value in (0.0, 0.5, 1.0) else None
