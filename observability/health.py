"""``/health`` and ``/ready`` beside ``/metrics``: what orchestrators ask a member.

Liveness and readiness answer different questions, and mixing them up does harm. A
liveness probe that failed whenever the cluster had no leader would make Kubernetes
restart every member of a cluster that lost quorum, which only makes it worse; so
``/health`` fails only when this process is wedged: its consensus loop has not turned for
``LOOP_STALL_S`` (the HTTP server runs on its own thread, so it can still answer then).
``/ready`` says whether this member is worth sending clients to: it knows a leader and has
applied everything it has heard is committed. Both answer 200 or 503, with the reason in
the body, as plain text.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

LOOP_STALL_S: Final = 10.0

# A check: None when all is well, else why not.
Check = Callable[[], str | None]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Health:
    live: Check
    ready: Check


def with_health(app: WsgiApp, health: Health) -> WsgiApp:
    """``app`` (the metrics) with ``/health`` and ``/ready`` in front of it."""
    checks = {"/health": health.live, "/ready": health.ready}

    def routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        check = checks.get(environ.get("PATH_INFO", ""))
        if check is None:
            return app(environ, start_response)
        try:
            problem = check()
        except Exception as exc:  # a bug in a check must not look like a healthy member
            problem = f"the check failed: {exc!r}"
        status = "200 OK" if problem is None else "503 Service Unavailable"
        body = ("ok" if problem is None else problem).encode() + b"\n"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return routed


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a probe every few seconds would drown the member's log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def serve(host: str, port: int, app: WsgiApp) -> tuple[WSGIServer, threading.Thread]:
    """``app`` on HOST:PORT from a daemon thread (IPv6 when the host is an IPv6 address)."""
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread
