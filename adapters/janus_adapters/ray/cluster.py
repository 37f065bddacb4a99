"""Joining Ray: the cluster RAY_ADDRESS (or --ray-address) names, checked to answer within a timeout first, or
a local Ray on loopback started for this process."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import ray

from janus_sdk.errors import JanusError

ADDRESS_ENV = "RAY_ADDRESS"
CONNECT_TIMEOUT_S = 10.0
"""How long the head node may take to accept a connection before joining it is given up."""
LOCAL = (None, "", "local")
"""Addresses that mean a Ray of our own on this machine."""


class RayUnreachableError(JanusError):
    """The Ray cluster named could not be joined."""


def connect(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (default: $RAY_ADDRESS), or start a local Ray on loopback with `num_cpus`
    CPUs (default: all) when neither names one. Nothing to do when this process has joined one already."""
    named = cluster_address(address)
    if named is not None and named != "auto":
        check_reachable(named, CONNECT_TIMEOUT_S)
    if ray.is_initialized():
        return
    try:
        if named is None:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=named, log_to_driver=False)
    except ConnectionError as exc:
        raise RayUnreachableError(f"cannot join the Ray cluster at {named!r}: {_first_line(exc)}") from None


def cluster_address(address: str | None) -> str | None:
    """The cluster `address` or else $RAY_ADDRESS names; None for a Ray of our own on this machine."""
    named = address if address is not None else os.environ.get(ADDRESS_ENV)
    return None if named in LOCAL else named


def joins_local(address: str | None) -> bool:
    """Whether `connect(address)` starts a Ray of its own on this machine rather than joining a cluster."""
    return cluster_address(address) is None


def check_reachable(address: str, timeout: float) -> None:
    """Raise RayUnreachableError, naming the address and what to do, unless its head node accepts a TCP
    connection within `timeout` seconds (ray.init would retry for minutes)."""
    host, port = host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = f"no answer in {timeout:g} s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise RayUnreachableError(
            f"cannot reach the Ray cluster at {address!r} ({reason.lower()}): start it "
            f"(`ray start --head`), fix {ADDRESS_ENV} / --ray-address, or unset both to run on a local Ray"
        ) from None


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of a Ray address: HOST:PORT (the head's GCS, default port 6379) or ray://HOST:PORT (Ray
    Client, default 10001)."""
    client = address.startswith("ray://")
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1:
        raise RayUnreachableError(f"{address!r} is not a Ray address: give HOST:PORT or ray://HOST:PORT")
    return parts.hostname, port or (10001 if client else 6379)


def gpus_in_cluster() -> float:
    """How many GPUs the joined cluster has (0 on a CPU-only one)."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call, unused-ignore]  # Ray's own (untyped; Any without ray)
    return float(resources.get("GPU", 0))


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
