"""Running the app with uvicorn: in the foreground (`janus serve`) or on a thread (tests, notebooks).

The listening socket is bound here, before uvicorn starts, so port 0 picks a free port without a race and the
real address is known up front.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from janus_sdk.errors import InputError

GRACEFUL_SHUTDOWN_S = 5
"""On shutdown, open requests get this long before they are cancelled (their jobs stop at the next token)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 if host is an IPv6 address); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {_bind_hint(exc)}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _bind_hint(exc: OSError) -> str:
    """What went wrong binding, and what to do about it."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use (another server?); pick another --port, or --port 0 for a free one"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); pick a --port of 1024 or more"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no network interface of this machine has that address; check --host (127.0.0.1, 0.0.0.0)"
    return f"{exc.strerror or exc}; check --host and --port"


def url_of(sock: socket.socket) -> str:
    """http://host:port of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: FastAPI, log_level: str) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    )


def serve(app: FastAPI, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve until Ctrl-C (then return) or SIGTERM (then exit by the signal), shutting down gracefully first.

    uvicorn re-raises the SIGINT it handled, as KeyboardInterrupt; here that is the normal way to stop.
    """
    with contextlib.suppress(KeyboardInterrupt):
        _server(app, log_level).run(sockets=[sock])


@contextmanager
def serve_in_thread(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout: float = 30.0,
) -> Iterator[str]:
    """Serve `app` on a daemon thread while the block runs; yields the base URL (e.g. http://127.0.0.1:41234)."""
    sock = bind(host, port)
    server = _server(app, log_level)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="janus-uvicorn", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(GRACEFUL_SHUTDOWN_S + 10)
        sock.close()
