"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the judge tests, with faults.

Start it with ``with FakeJudge(expected_key=...) as judge: ... judge.base_url``. It answers
``POST /v1/chat/completions`` and records every request (``judge.requests``), counting attempts per
distinct request body. What it replies is decided from the text of the last user message:

* ``FAULT:500xN`` / ``FAULT:429xN`` / ``FAULT:slowxN``: the first N attempts of that request get an HTTP 500,
  an HTTP 429 (``Retry-After: 0``) or a reply delayed by ``slow_seconds`` (past the client's timeout);
  later attempts are answered normally. Without ``xN`` the fault is permanent.
* ``FAULT:garbage``: a reply that is not a score; ``FAULT:nonjson``: an HTTP 200 whose body is not JSON;
  ``FAULT:nochoices``: an HTTP 200 completion without choices (all three permanent, or ``xN``).
* ``cycle=[...]`` (constructor): every chat request, in arrival order, gets the next fault of the list
  (``"500"``, ``"429"``, ``"hang"`` (past the client's timeout), ``"nonjson"``, ``"nochoices"``,
  ``"garbage"``, ``"valid"``), whatever its text; ``paid`` counts the requests that got a usable score.
* ``rotate=[...]`` (constructor): the same faults, decided per distinct request (its messages) instead of
  per arrival, so that a run killed and resumed meets the faults an uninterrupted run met: the k-th distinct
  request to arrive starts at entry k (mod the length), each further attempt of it gets the next entry, and
  the walk stops at the first entry that ends a request (``"valid"``, ``"nonjson"``, ``"nochoices"``,
  ``"garbage"``), which every later attempt gets again: only the retryable faults (``"500"``, ``"429"``,
  ``"hang"``) move on. Every kind occurs; with one client worker the assignment is the same in every run.
* ``retry_after`` (constructor, default ``"0"``): the ``Retry-After`` header of every 429;
  ``reply_delay``: seconds every scored reply waits (a judge's latency, so a test can kill a client while
  requests are in flight).
* ``FAULT:echo-auth``: an HTTP 400 whose error message repeats the Authorization header (a server
  that leaks the key back; the client must scrub it).
* otherwise a score: with an attached image, from the colour of its top-left pixel (red 1, green 0.5,
  anything else 0); without one, from the "Reference answer:" and "Candidate answer:" lines (equal
  ignoring case and a final period: 1; sharing a word of 4+ letters: 0.5; else 0).

Every chat request (in the other modes: every one that got a score) is logged in ``judge.log`` as
``{"request": sha256 of its messages, "attempt", "kind", "t"}`` (``kind``: what it got: ``"valid"`` for a
score, else the fault's name), so a test can count paid calls per request. Every request is also checked:
the model name, temperature 0, the seed, exactly a system and a user message (a fresh conversation), and
the bearer key when ``expected_key`` is set (else HTTP 401).
Violations are collected in ``judge.violations``.

It also answers the Images API: ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits``
(multipart, the reference images as ``image[]`` parts), recorded in ``judge.image_requests`` as
``{"endpoint", "model", "prompt", "n", "size", "n_references"}``. Each reply holds ``n`` base64 PNGs of
32x32 px whose colour follows the prompt and the image's index; a prompt containing ``FAULT:500`` gets an
HTTP 500, ``FAULT:url`` a reply with URLs only. The model must be ``image_model``.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_FAULT = re.compile(r"FAULT:(500|429|slow|garbage|nonjson|nochoices|echo-auth)(?:x(\d+))?")


class FakeJudge:
    def __init__(self, expected_key: str | None = None, model: str = "fake-judge", seed: int | None = None,
                 slow_seconds: float = 1.5, image_model: str = "gpt-image-1", cycle: list[str] | None = None,
                 rotate: list[str] | None = None, retry_after: str = "0", reply_delay: float = 0.0):
        self.expected_key = expected_key
        self.model = model
        self.image_model = image_model
        self.image_requests: list[dict] = []
        self.seed = seed
        self.slow_seconds = slow_seconds
        self.requests: list[dict] = []       # every request body, in arrival order
        self.violations: list[str] = []
        self.attempts: dict[str, int] = {}   # request-body hash -> attempts so far
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.cycle = list(cycle or [])
        self.paid = 0                         # requests answered with a score (what a real judge bills)
        self.paid_bodies: list[str] = []      # their request texts, to find repeated paid calls
        self.rotate = list(rotate or [])
        self.retry_after = retry_after
        self.reply_delay = reply_delay
        self.log: list[dict] = []             # one entry per chat request: which request, attempt, what it got
        self.rotate_start: dict[str, int] = {}      # messages hash -> its first entry (rotate mode)
        self.rotate_attempts: dict[str, int] = {}   # messages hash -> attempts so far (rotate mode)

    # ---- lifecycle

    def __enter__(self) -> "FakeJudge":
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # keep test output quiet
                pass

            def do_POST(self):
                judge._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def n_requests(self) -> int:
        with self.lock:
            return len(self.requests)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()

    # ---- one request

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if h.path.rstrip("/") in ("/v1/images/generations", "/v1/images/edits"):
            return self._images(h)
        if h.path.rstrip("/") != "/v1/chat/completions":
            return self._send(h, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(h, 400, {"error": {"message": "bad json"}})
        auth = h.headers.get("Authorization", "")
        digest = hashlib.sha256(raw).hexdigest()
        with self.lock:
            self.requests.append(body)
            self.attempts[digest] = attempt = self.attempts.get(digest, 0) + 1
            self._check(body)
        if self.expected_key is not None and auth != f"Bearer {self.expected_key}":
            return self._send(h, 401, {"error": {"message": "invalid api key", "type": "auth_error"}})
        text = _user_text(body)
        if self.rotate:
            request = messages_hash(body)
            with self.lock:
                self.rotate_start.setdefault(request, len(self.rotate_start) % len(self.rotate))
                self.rotate_attempts[request] = n = self.rotate_attempts.get(request, 0) + 1
            kind = _walk(self.rotate, self.rotate_start[request], n)
            return self._fault(h, body, text, {"hang": "slow"}.get(kind, kind), request, n)
        if self.cycle:
            with self.lock:
                kind = self.cycle[(len(self.requests) - 1) % len(self.cycle)]
            return self._fault(h, body, text, {"hang": "slow"}.get(kind, kind))
        fault = _FAULT.search(text)
        if fault:
            kind, times = fault.group(1), fault.group(2)
            active = times is None or attempt <= int(times)
            if kind in ("garbage", "nonjson", "nochoices") and active:
                return self._fault(h, body, text, kind)
            if kind == "echo-auth":
                return self._send(h, 400, {"error": {"message": f"cannot use header {auth!r}",
                                                     "type": "invalid_request_error"}})
            if active and kind == "500":
                return self._send(h, 500, {"error": {"message": "internal error", "type": "server_error"}})
            if active and kind == "429":
                return self._send(h, 429, {"error": {"message": "slow down", "type": "rate_limit"}},
                                  headers={"Retry-After": self.retry_after})
            if active and kind == "slow":
                time.sleep(self.slow_seconds)
        hung = bool(fault) and fault.group(1) == "slow" and active
        with self.lock:   # (the faults above that get no score are not logged in this mode)
            self.log.append({"request": messages_hash(body), "attempt": attempt, "t": time.monotonic(),
                             "kind": "hang" if hung else "valid"})
        return self._scored(h, body, text)

    def _scored(self, h, body: dict, text: str) -> None:
        if self.reply_delay:
            time.sleep(self.reply_delay)
        with self.lock:
            self.paid += 1
            self.paid_bodies.append(text)
        return self._reply(h, body, _score(body))

    def _fault(self, h, body: dict, text: str, kind: str, request: str | None = None, attempt: int = 0) -> None:
        """One reply of fault `kind` (see the module docstring); "valid" is a normal score."""
        if request is not None:
            with self.lock:
                self.log.append({"request": request, "attempt": attempt, "t": time.monotonic(),
                                 "kind": {"slow": "hang"}.get(kind, kind)})
        if kind == "500":
            return self._send(h, 500, {"error": {"message": "internal error", "type": "server_error"}})
        if kind == "429":
            return self._send(h, 429, {"error": {"message": "slow down", "type": "rate_limit"}},
                              headers={"Retry-After": self.retry_after})
        if kind == "slow":
            time.sleep(self.slow_seconds)
            return self._scored(h, body, text)
        if kind == "garbage":
            return self._reply(h, body, "The candidate seems mostly fine to me.")
        if kind == "nonjson":
            return self._send_raw(h, 200, b"<html><body>502 Bad Gateway</body></html>")
        if kind == "nochoices":
            return self._send(h, 200, {"id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                                       "model": body.get("model"), "choices": []})
        return self._scored(h, body, text)

    def _images(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        edit = h.path.rstrip("/").endswith("edits")
        if edit:   # multipart/form-data: text fields and image files
            from email.parser import BytesParser
            from email.policy import HTTP
            msg = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + h.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
            fields, refs = {}, 0
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    refs += 1
                else:
                    fields[name] = part.get_content().strip()
        else:
            fields, refs = json.loads(raw), 0
        req = {"endpoint": "edits" if edit else "generations", "model": fields.get("model"),
               "prompt": fields.get("prompt", ""), "n": int(fields.get("n", 1)), "size": fields.get("size"),
               "n_references": refs}
        with self.lock:
            self.image_requests.append(req)
            if req["model"] != self.image_model:
                self.violations.append(f"image model {req['model']!r}")
        if self.expected_key is not None and h.headers.get("Authorization", "") != f"Bearer {self.expected_key}":
            return self._send(h, 401, {"error": {"message": "invalid api key", "type": "auth_error"}})
        if "FAULT:500" in req["prompt"]:
            return self._send(h, 500, {"error": {"message": "internal error", "type": "server_error"}})
        if "FAULT:url" in req["prompt"]:
            return self._send(h, 200, {"created": 0, "data": [{"url": "http://example.invalid/x.png"}] * req["n"]})
        from PIL import Image
        data = []
        for k in range(req["n"]):
            seed = hashlib.sha256(f"{req['prompt']}#{k}".encode()).digest()
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), tuple(seed[:3])).save(buf, format="PNG")
            data.append({"b64_json": base64.b64encode(buf.getvalue()).decode()})
        self._send(h, 200, {"created": 0, "data": data})

    def _check(self, body: dict) -> None:
        msgs = body.get("messages", [])
        if body.get("model") != self.model:
            self.violations.append(f"model {body.get('model')!r}")
        if body.get("temperature") != 0:
            self.violations.append(f"temperature {body.get('temperature')!r}")
        if self.seed is not None and body.get("seed") != self.seed:
            self.violations.append(f"seed {body.get('seed')!r}")
        if [m.get("role") for m in msgs] != ["system", "user"]:
            self.violations.append(f"roles {[m.get('role') for m in msgs]}")

    def _reply(self, h, body: dict, text: str) -> None:
        prompt_tokens = len(json.dumps(body.get("messages", []))) // 4
        self._send(h, 200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
        })

    @staticmethod
    def _send(h, status: int, payload: dict, headers: dict | None = None) -> None:
        FakeJudge._send_raw(h, status, json.dumps(payload).encode(), headers)

    @staticmethod
    def _send_raw(h, status: int, data: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client timed out and left


TERMINAL = ("valid", "nonjson", "nochoices", "garbage")   # replies that end a request (rotate mode)


def _walk(rotation: list[str], start: int, attempt: int) -> str:
    """What attempt `attempt` (1, 2, ...) of a request starting at `rotation[start]` gets (rotate mode)."""
    for k in range(attempt):
        kind = rotation[(start + k) % len(rotation)]
        if kind in TERMINAL:
            return kind
    return kind


def messages_hash(body: dict) -> str:
    """sha256 of a chat request's messages: one distinct request, whatever its attempt."""
    return hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()


def _user_text(body: dict) -> str:
    content = body.get("messages", [{}])[-1].get("content", "")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content


def _image_bytes(body: dict) -> bytes | None:
    content = body.get("messages", [{}])[-1].get("content", "")
    if isinstance(content, list):
        for p in content:
            if p.get("type") == "image_url":
                url = p["image_url"]["url"]
                return base64.b64decode(url.split(",", 1)[1])
    return None


def _score(body: dict) -> str:
    image = _image_bytes(body)
    if image is not None:
        from PIL import Image
        r, g, b = Image.open(io.BytesIO(image)).convert("RGB").getpixel((0, 0))
        return "1" if r > 200 and g < 80 else "0.5" if g > 200 and r < 80 else "0"
    text = _user_text(body)
    ref = re.search(r"Reference answer: (.*)", text)
    cand = re.search(r"Candidate answer: (.*)", text)
    if not ref or not cand:
        return "0"
    a, b = ref.group(1).strip().rstrip(".").lower(), cand.group(1).strip().rstrip(".").lower()
    if a == b:
        return "1"
    words = lambda s: {w for w in re.findall(r"[a-z]+", s) if len(w) >= 4}  # noqa: E731
    return "0.5" if words(a) & words(b) else "0"
