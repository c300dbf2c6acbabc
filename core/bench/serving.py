"""A runtime behind a small HTTP endpoint, and a load test with concurrent clients.

``start_server(runtime)`` serves ``POST /predict`` (``{"texts": [...]}`` or ``{"text": "..."}``)
and ``GET /health`` with Starlette on uvicorn, bound to 127.0.0.1 on a random free port, in a
background thread. ``load_test(port, texts, clients, requests)`` sends requests from ``clients``
threads, each on its own keep-alive connection, and returns requests/s and latencies.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass

HOST = "127.0.0.1"


def make_app(runtime):
    """The ASGI app: one model, predictions as JSON."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def predict(request):
        try:
            body = await request.json()
            texts = body["texts"] if "texts" in body else [body["text"]]
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"texts": ["..."]} or {"text": "..."}'}, 400)
        # Inference runs on the event loop on purpose: one model already uses every core, so
        # requests queue here instead of contending in a thread pool.
        preds = runtime.predict(texts)
        return JSONResponse({"predictions": [
            {"label": p.label, "score": round(p.probs[p.label], 6)} for p in preds]})

    async def health(request):
        return JSONResponse({"ok": True, "runtime": runtime.label})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                             Route("/health", health)])


@dataclass
class Server:
    port: int
    _server: object
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


def start_server(runtime, timeout: float = 20.0) -> Server:
    """Serve ``runtime`` on 127.0.0.1 and a free port chosen by the OS; returns once it listens."""
    import uvicorn

    # proto=IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets
    # whose proto is IPPROTO_TCP (asyncio/base_events.py _set_nodelay); with proto 0 every
    # response body waited ~40 ms for the client's delayed ACK (measured: 44 ms a request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))  # port 0: no race between picking a free port and binding it
    config = uvicorn.Config(make_app(runtime), log_level="warning", lifespan="off",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the HTTP server did not start")
        time.sleep(0.02)
    return Server(sock.getsockname()[1], server, thread)


def _connect(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle off: http.client sends headers and body in separate
    writes, and Nagle + the server's delayed ACK can hold the body ~40 ms (RFC 1122 4.2.3.2)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _client(port: int, bodies: list[bytes], next_index, times: list, errors: list) -> None:
    conn = _connect(port)
    headers = {"Content-Type": "application/json"}
    try:
        while (i := next_index()) is not None:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", bodies[i % len(bodies)], headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException) as exc:
                ok = False
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = _connect(port)
            if ok:
                times.append((time.perf_counter() - t0) * 1e3)
            elif not errors:
                errors.append(f"HTTP {resp.status}")
    finally:
        conn.close()


def _counter(limit: int):
    lock, state = threading.Lock(), {"n": 0}

    def next_index():
        with lock:
            if state["n"] >= limit:
                return None
            state["n"] += 1
            return state["n"] - 1
    return next_index


def load_test(port: int, texts: list[str], clients: int = 4, requests: int = 200,
              warmup: int = 8) -> dict:
    """``requests`` single-text requests from ``clients`` concurrent clients.

    Returns ``times_ms`` (one per successful request), ``rps`` (successful requests per second of
    wall time), ``errors`` (count) and the first error message.
    """
    bodies = [json.dumps({"texts": [t]}, ensure_ascii=False).encode() for t in texts]
    _client(port, bodies, _counter(warmup), [], [])  # first requests pay for lazy set-up
    times: list[float] = []
    errors: list[str] = []
    next_index = _counter(requests)
    threads = [threading.Thread(target=_client, args=(port, bodies, next_index, times, errors))
               for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"times_ms": times, "rps": len(times) / wall if wall > 0 else 0.0,
            "errors": requests - len(times), "first_error": errors[0] if errors else None,
            "clients": clients, "wall_s": wall}
