"""Local preview of this bundle: `python serve.py` then open http://127.0.0.1:8000/

Standard library only, so it runs anywhere Python 3.9+ does. It listens on 127.0.0.1 only and sends
what onnxruntime-web needs:
- `Cross-Origin-Opener-Policy: same-origin` + `Cross-Origin-Embedder-Policy: require-corp`, which
  make the page cross-origin isolated so multi-threaded wasm can run
  (https://web.dev/articles/coop-coep); `--no-isolation` leaves them out (single-threaded);
- `.mjs` as text/javascript and `.wasm` as application/wasm (a wrong type or a 404 page in place of
  the wasm shows up in the browser as "expected magic word 00 61 73 6d").
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import sys
import threading

HOST = "127.0.0.1"
TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


class BundleHandler(http.server.SimpleHTTPRequestHandler):
    isolation = True  # send the COOP/COEP headers
    quiet = True  # no access log lines

    # Explicit types: mimetypes depends on the OS and knows neither .mjs nor .wasm everywhere.
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self) -> None:
        if self.isolation:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")  # a rebuilt bundle shows at once
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)


def make_server(directory: str, port: int = 0, isolation: bool = True,
                quiet: bool = True) -> http.server.ThreadingHTTPServer:
    """A server for ``directory`` on 127.0.0.1 (``port=0``: any free port; see ``server_port``)."""
    handler = type("Handler", (BundleHandler,), {"isolation": isolation, "quiet": quiet})
    server = http.server.ThreadingHTTPServer(
        (HOST, port), functools.partial(handler, directory=os.fspath(directory)))
    server.daemon_threads = True
    return server


def serve_in_thread(directory: str, port: int = 0, isolation: bool = True):
    """Start a server in a daemon thread; returns (server, url). Stop it with server.shutdown()."""
    server = make_server(directory, port, isolation)
    thread = threading.Thread(target=server.serve_forever, name="bundle-preview", daemon=True)
    thread.start()
    return server, f"http://{HOST}:{server.server_port}/"


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Preview this bundle on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--dir", default=here, help="folder to serve (default: this bundle)")
    parser.add_argument("--no-isolation", action="store_true",
                        help="leave out COOP/COEP (the page then runs single-threaded)")
    args = parser.parse_args(argv)
    server = make_server(args.dir, args.port, not args.no_isolation, quiet=False)
    print(f"Serving {args.dir} at http://{HOST}:{server.server_port}/ (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
