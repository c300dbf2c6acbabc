"""An OpenAI-compatible test server on 127.0.0.1 with configurable latency and faults.

Serves ``POST /v1/chat/completions`` (reads the per-label counts JSON line of our prompt and returns
``{"examples": [...]}``), plus enough of ``/v1/files`` and ``/v1/batches`` (create, retrieve,
cancel) for the Batch API path; a batch naming a model outside ``Faults.batch_models`` fails
validation with ``errors.data`` as the real API reports it.
Faults per request: 429 with Retry-After, 500, timeouts (sleeps past the client's timeout),
malformed JSON content, truncated JSON (finish_reason "length"), a non-JSON body; per example:
wrong labels, duplicate / near-duplicate texts, junk (non-Korean, too short).

It stops by itself after ``idle_timeout_s`` without requests or ``max_lifetime_s`` in all, so a
crashed test never leaves it running. Run standalone: ``python tests/fake_openai.py --latency 0.5``.
"""

from __future__ import annotations

import email.parser
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUEST_FAULTS = ("rate_limit", "server_error", "timeout", "malformed", "truncated", "bad_body")


@dataclass
class Faults:
    """Probabilities per chat request (REQUEST_FAULTS) or per example (the rest)."""

    rate_limit: float = 0.0  # 429 with Retry-After
    server_error: float = 0.0  # 500
    timeout: float = 0.0  # answer only after timeout_sleep seconds
    malformed: float = 0.0  # 200, content is not JSON
    truncated: float = 0.0  # 200, content cut mid-way, finish_reason "length"
    bad_body: float = 0.0  # 200, the HTTP body itself is not JSON
    wrong_label: float = 0.0  # share of examples with a label outside the set
    duplicate: float = 0.0  # share of examples repeating an earlier text (exact or respaced)
    junk: float = 0.0  # share of examples that are English or too short
    retry_after: float = 0.2  # seconds sent in Retry-After on 429
    timeout_sleep: float = 3.0
    script: list[str] = field(default_factory=list)  # forced faults for the first requests ("ok")
    schema_support: bool = True  # False: json_schema response_format gets a 400
    batch_line_error: float = 0.0  # share of Batch API lines that fail
    batch_models: tuple[str, ...] = ()  # non-empty: a batch naming another model fails validation


@dataclass
class Stats:
    chat_requests: int = 0
    faults: Counter = field(default_factory=Counter)
    response_formats: Counter = field(default_factory=Counter)
    keys_seen: set = field(default_factory=set)
    served_texts: list = field(default_factory=list)
    batches_created: int = 0
    batch_requests: int = 0  # lines of every batch created (what the Batch API would bill)
    cancel_calls: list = field(default_factory=list)  # batch ids POSTed to /batches/{id}/cancel
    files_uploaded: int = 0


def _hangul_word(rng: random.Random) -> str:
    return "".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(rng.randint(1, 4)))


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, faults: Faults | None = None, seed: int = 0,
                 api_key: str | None = None, batch_delay: float = 0.3,
                 idle_timeout_s: float = 120.0, max_lifetime_s: float = 600.0):
        self.latency, self.faults, self.api_key = latency, faults or Faults(), api_key
        self.batch_delay = batch_delay
        self.idle_timeout_s, self.max_lifetime_s = idle_timeout_s, max_lifetime_s
        self.stats = Stats()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._last_seen = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.daemon_threads = True
        server.block_on_close = False
        server.request_queue_size = 128  # default 5 drops SYNs when 8+ clients connect at once
        server.server_bind()
        server.server_activate()
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        threading.Thread(target=self._watchdog, daemon=True).start()
        return self

    def _watchdog(self) -> None:
        started = time.monotonic()
        while not self._stopped.wait(0.5):
            now = time.monotonic()
            if now - self._last_seen > self.idle_timeout_s or now - started > self.max_lifetime_s:
                self.stop()

    def stop(self) -> None:
        if self._server is not None and not self._stopped.is_set():
            self._stopped.set()
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- behaviour ------------------------------------------------------------------------------
    def pick_fault(self) -> str:
        with self._lock:
            self.stats.chat_requests += 1
            if self.faults.script:
                fault = self.faults.script.pop(0)
            else:
                fault = next((f for f in REQUEST_FAULTS
                              if self._rng.random() < getattr(self.faults, f)), "ok")
            self.stats.faults[fault] += 1
            return fault

    def make_examples(self, counts: dict[str, int]) -> list[dict]:
        f, out = self.faults, []
        with self._lock:
            rng, served = self._rng, self.stats.served_texts
            for label, k in counts.items():
                for _ in range(int(k)):
                    r = rng.random()
                    if r < f.duplicate and served:
                        old = rng.choice(served)
                        text = old if rng.random() < 0.5 else old.replace(" ", "  ") + "!!"
                    elif r < f.duplicate + f.junk:
                        text = rng.choice(["hello world, nice day", "ㅋ", "ok ok ok ok ok"])
                    else:
                        text = " ".join(_hangul_word(rng) for _ in range(rng.randint(3, 8))) + "요."
                        served.append(text)
                    bad_label = rng.random() < f.wrong_label
                    out.append({"text": text, "label": "행복함" if bad_label else label})
        return out

    def completion(self, body: dict, fault: str = "ok") -> dict:
        counts = _requested_counts(body.get("messages", []))
        content = json.dumps({"examples": self.make_examples(counts)}, ensure_ascii=False)
        finish = "stop"
        if fault == "malformed":
            content = "Sure! Here are your examples: [text: 좋아요, label: 기쁨 ..."
        elif fault == "truncated":
            content, finish = content[: max(len(content) // 2, 10)], "length"
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": prompt_chars // 2, "completion_tokens": len(content) // 2,
                      "total_tokens": prompt_chars // 2 + len(content) // 2},
        }

    def run_batch(self, batch_id: str) -> None:
        """validating -> in_progress -> completed, batch_delay apart; stops where a cancel or a
        failed validation took the batch out of the expected status."""
        batch = self.batches[batch_id]
        lines = self.files[batch["input_file_id"]]["content"].decode("utf-8").splitlines()
        reqs = [json.loads(line) for line in lines if line.strip()]
        time.sleep(self.batch_delay)
        errors = self._validate(reqs)
        if not self._advance(batch, "validating", "failed" if errors else "in_progress",
                             errors={"object": "list", "data": errors} if errors else None):
            return
        out, errs = [], []
        for req in reqs:
            with self._lock:
                failed = self._rng.random() < self.faults.batch_line_error
            if failed:
                errs.append({"id": f"req_{len(errs)}", "custom_id": req["custom_id"], "response":
                             {"status_code": 500, "body": {"error": {"message": "boom"}}}, "error": None})
            else:
                out.append({"id": f"req_{len(out)}", "custom_id": req["custom_id"], "error": None,
                            "response": {"status_code": 200, "body": self.completion(req["body"])}})
        time.sleep(self.batch_delay)
        counts = {"total": len(out) + len(errs), "completed": len(out), "failed": len(errs)}
        self._advance(batch, "in_progress", "completed", request_counts=counts,
                      output_file_id=self.add_file(out, "batch_output"),
                      error_file_id=self.add_file(errs, "batch_error") if errs else None)

    def _validate(self, reqs: list[dict]) -> list[dict]:
        models = self.faults.batch_models
        return [{"code": "model_not_found", "line": i, "param": "body.model",
                 "message": f"The model '{r['body'].get('model')}' does not exist or you do not "
                            "have access to it."}
                for i, r in enumerate(reqs, 1) if models and r["body"].get("model") not in models]

    def _advance(self, batch: dict, expected: str, status: str, **fields) -> bool:
        with self._lock:
            if batch["status"] != expected:
                return False
            batch.update(status=status, **fields)
            return True

    def cancel_batch(self, batch_id: str) -> dict | None:
        """Real batches sit in "cancelling" for up to 10 minutes; here for batch_delay."""
        with self._lock:
            self.stats.cancel_calls.append(batch_id)
            batch = self.batches.get(batch_id)
            if batch is None or batch["status"] not in ("validating", "in_progress", "finalizing"):
                return None
            batch["status"] = "cancelling"
        timer = threading.Timer(self.batch_delay, self._advance, (batch, "cancelling", "cancelled"))
        timer.daemon = True
        timer.start()
        return batch

    def add_file(self, content, purpose: str, filename: str = "data.jsonl") -> str:
        if isinstance(content, list):
            content = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in content).encode()
        with self._lock:
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = {"id": fid, "object": "file", "bytes": len(content),
                               "created_at": int(time.time()), "filename": filename,
                               "purpose": purpose, "status": "processed", "content": content}
        return fid


def _requested_counts(messages: list[dict]) -> dict[str, int]:
    """The ``{"label": count}`` JSON line our prompt carries (the first such line of a user turn)."""
    for m in messages:
        if m.get("role") != "user":
            continue
        for line in str(m.get("content", "")).splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
                    return data
    return {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real API servers
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms on Linux) and every request looks 40 ms slower than its latency.
    disable_nagle_algorithm = True
    fake: FakeOpenAI

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout fault)

    def _error(self, status: int, message: str, code: str | None = None, headers=None):
        self._send(status, {"error": {"message": message, "type": "fake", "code": code}}, headers)

    def _authorized(self) -> bool:
        fake = self.fake
        fake._last_seen = time.monotonic()
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        with fake._lock:
            fake.stats.keys_seen.add(key)
        if fake.api_key is not None and key != fake.api_key:
            # Echo the key the way a careless proxy might: tests check the client redacts it.
            self._error(401, f"Incorrect API key provided: {key}", "invalid_api_key")
            return False
        return True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = self._body()
        if not self._authorized():
            return
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            return self._chat(json.loads(body))
        if path.endswith("/files"):
            return self._upload(body)
        if path.endswith("/batches"):
            return self._create_batch(json.loads(body))
        if m := re.search(r"/batches/([\w-]+)/cancel$", path):
            batch = self.fake.cancel_batch(m.group(1))
            return self._send(200, batch) if batch else self._error(400, "cannot cancel it now")
        self._error(404, f"no route {path}")

    def do_GET(self):  # noqa: N802
        if not self._authorized():
            return
        fake, path = self.fake, self.path.split("?")[0]
        if m := re.search(r"/files/([\w-]+)/content$", path):
            f = fake.files.get(m.group(1))
            return self._send(200, None, raw=f["content"]) if f else self._error(404, "no file")
        if m := re.search(r"/files/([\w-]+)$", path):
            f = fake.files.get(m.group(1))
            return self._send(200, {k: v for k, v in f.items() if k != "content"}) if f \
                else self._error(404, "no file")
        if m := re.search(r"/batches/([\w-]+)$", path):
            b = fake.batches.get(m.group(1))
            return self._send(200, b) if b else self._error(404, "no batch")
        self._error(404, f"no route {path}")

    def _chat(self, body: dict) -> None:
        fake = self.fake
        fmt = (body.get("response_format") or {}).get("type", "none")
        with fake._lock:
            fake.stats.response_formats[fmt] += 1
        if fmt == "json_schema" and not fake.faults.schema_support:
            return self._error(400, "response_format json_schema is not supported by this server")
        fault = fake.pick_fault()
        time.sleep(fake.latency)
        if fault == "rate_limit":
            return self._error(429, "Rate limit reached", "rate_limit_exceeded",
                               {"Retry-After": str(fake.faults.retry_after)})
        if fault == "server_error":
            return self._error(500, "The server had an error while processing your request")
        if fault == "timeout":
            time.sleep(fake.faults.timeout_sleep)
        if fault == "bad_body":
            return self._send(200, None, raw=b'{"id": "chatcmpl-x", "choices": [')
        self._send(200, fake.completion(body, fault))

    def _upload(self, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        msg = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields, content, filename = {}, b"", "upload.jsonl"
        for part in msg.get_payload():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                content, filename = part.get_payload(decode=True), part.get_filename()
            else:
                fields[name] = part.get_payload(decode=True).decode()
        fid = self.fake.add_file(content, fields.get("purpose", "batch"), filename)
        self.fake.stats.files_uploaded += 1
        f = self.fake.files[fid]
        self._send(200, {k: v for k, v in f.items() if k != "content"})

    def _create_batch(self, body: dict) -> None:
        fake = self.fake
        if body.get("input_file_id") not in fake.files:
            return self._error(400, "input_file_id not found")
        lines = fake.files[body["input_file_id"]]["content"].splitlines()
        with fake._lock:
            bid = f"batch_{len(fake.batches) + 1}"
            fake.stats.batches_created += 1
            fake.stats.batch_requests += sum(1 for line in lines if line.strip())
            fake.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": "24h",
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": body.get("metadata"),
                "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        threading.Thread(target=fake.run_batch, args=(bid,), daemon=True).start()
        self._send(200, fake.batches[bid])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--lifetime", type=float, default=600.0)
    a = ap.parse_args()
    server = FakeOpenAI(latency=a.latency, max_lifetime_s=a.lifetime, idle_timeout_s=a.lifetime).start()
    print(server.url, flush=True)
    server._stopped.wait()
