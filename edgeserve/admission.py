"""How much work the server takes on at once: the overload bounds.

Three bounds keep an edge box answering under more load than it can serve, each
refusing at once and saying why instead of queueing without end:
- `--rest_api_max_connections` (rest_api.HttpProtocol) and `--grpc_max_connections`
  (`Connections`, used by grpc_api.GrpcServer): open connections, each of which costs a
  file descriptor and buffers;
- `--max_pending_requests` (`Pending`): inference requests taken and not yet answered,
  REST and gRPC together. Requests that finish inline never count; the bound is on
  those waiting for a worker thread, a batch or a version, whose memory (bodies,
  tensors) and waiting time would otherwise grow with the load.
Beyond a bound the answer is 503 / UNAVAILABLE, which clients and load balancers
retry elsewhere or later. TF Serving has none of these: it queues in its gRPC
threads and the kernel until clients time out.
"""
from __future__ import annotations

import logging
import resource

from .errors import ServingError, StatusCode

log = logging.getLogger("edgeserve.admission")


class Pending:
    """Inference requests taken and not yet answered (REST and gRPC)."""

    __slots__ = ("count", "limit", "refused", "_error")

    def __init__(self, limit: int = 0) -> None:
        self.count = 0
        self.limit = limit  # 0: no bound
        self.refused = 0
        # Made once: under overload refusing is most of the work, so it must be cheap.
        self._error = ServingError(
            StatusCode.UNAVAILABLE,
            f"Too many requests in progress: this server holds at most {limit} at once "
            "(--max_pending_requests); try again shortly",
        )

    def refusal(self) -> ServingError | None:
        """The error to answer a new request with when the bound is reached, else None."""
        if not self.limit or self.count < self.limit:
            return None
        self.refused += 1
        return self._error


class Connections:
    """Open gRPC connections against --grpc_max_connections (shared by the TCP port
    and the Unix socket, like one listener)."""

    __slots__ = ("count", "limit", "refused")

    def __init__(self, limit: int = 0) -> None:
        self.count = 0
        self.limit = limit  # 0: no bound
        self.refused = 0

    def full(self) -> bool:
        return bool(self.limit) and self.count >= self.limit

    def message(self) -> str:
        return (f"Too many connections: this server takes at most {self.limit} at once "
                "(--grpc_max_connections)")


def raise_open_files_limit(wanted: int) -> None:
    """Raises the soft limit on open files toward `wanted` (within the hard limit).

    systemd and most shells start services with a soft limit of 1024, which the
    connection bounds alone would exceed; the hard limit is usually far higher. If it
    is not, say so: past it, accepting a connection fails instead of being refused
    with a reason."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < wanted:
        log.warning(
            "Open files are limited to %d (hard limit), fewer than the %d the connection limits "
            "and models may need; raise LimitNOFILE or lower --rest_api_max_connections / "
            "--grpc_max_connections", new, wanted)
