"""A real OpenAI-compatible HTTP server for tests, on 127.0.0.1 (a random port) in a thread
(imported by the LLM backend and disambiguate stage tests; not a test module).

``serve(respond)`` runs it: ``respond(request)`` gets each request (path, body, auth, number
from 0) and returns a :class:`Reply` (status, JSON body, headers, a delay before answering).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialisable; None: a chat completion of `content`
    content: str = "hello"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to outlast a client's timeout)


def completion(content: str | None) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


class Server(ThreadingHTTPServer):
    """Records every request; ``stop`` ends pending delays so shutdown is quick."""

    def __init__(self, respond: Callable[[dict], Reply]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.requests: list[dict] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):  # a client that gave up: not an error here
        pass


class _Handler(BaseHTTPRequestHandler):
    server: Server

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            request = {"path": self.path, "body": body, "auth": self.headers.get("Authorization"),
                       "number": len(self.server.requests)}
            self.server.requests.append(request)
        reply = self.server.respond(request)
        if reply.delay and self.server.stop.wait(reply.delay):
            return
        payload = json.dumps(completion(reply.content) if reply.body is None else reply.body)
        data = payload.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have timed out and gone
            self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@contextlib.contextmanager
def serve(respond: Callable[[dict], Reply]) -> Iterator[Server]:
    """A running :class:`Server`; its base URL is ``url(server)``."""
    httpd = Server(respond)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def url(httpd: Server) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1/"


def closed_port_url() -> str:
    """The base URL of a port on 127.0.0.1 that nothing listens on (connections refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
