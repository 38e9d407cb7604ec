"""systemd integration: sd_notify messages, the watchdog and inherited sockets.

`Notifier` speaks the sd_notify protocol (one datagram of "KEY=VALUE" lines to the
Unix socket named by $NOTIFY_SOCKET; "@name" is the abstract namespace): READY=1,
STATUS=..., RELOADING=1 with MONOTONIC_USEC, STOPPING=1, WATCHDOG=1. Without
$NOTIFY_SOCKET (not started by systemd) every call does nothing. A few lines of
socket code, so no dependency.

`inherited_sockets` takes the listening sockets systemd passes with socket activation
($LISTEN_FDS, $LISTEN_PID; fds from 3 on) and removes those variables, so a child
process never takes them for its own.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("edgeserve.systemd")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START


class Notifier:
    def __init__(self, environ: dict | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._socket: socket.socket | None = None
        self._failed = False
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:  # systemd went away or the socket is wrong: say it once
            if not self._failed:
                log.warning("Could not notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
                self._failed = True

    def ready(self, status: str) -> None:
        self.notify("READY=1", "STATUS=" + status)

    def status(self, status: str) -> None:
        self.notify("STATUS=" + status)

    def reloading(self) -> None:
        # systemd (Type=notify-reload) wants the time the reload started, CLOCK_MONOTONIC.
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=draining requests, then unloading models")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_seconds(env) -> float | None:
    """Half of $WATCHDOG_USEC (systemd's advice), when the watchdog is meant for us."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2 / 1e6


def inherited_sockets(environ: dict | None = None) -> list[socket.socket]:
    """The sockets systemd handed over ($LISTEN_FDS for this pid), in order."""
    env = os.environ if environ is None else environ
    try:
        pid = int(env.get("LISTEN_PID", "0"))
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def pick(sockets: list[socket.socket], *, unix_path: str | None = None, port: int | None = None):
    """The inherited socket listening on `unix_path` or on TCP `port`, taken out of
    `sockets`; None when systemd passed none for it."""
    for sock in sockets:
        try:
            name = sock.getsockname()
        except OSError:
            continue
        if sock.family == socket.AF_UNIX:
            if unix_path is not None and name == unix_path:
                sockets.remove(sock)
                return sock
        elif port is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and name[1] == port:
            sockets.remove(sock)
            return sock
    return None


def status_line(manager) -> str:
    """What systemd's STATUS= says: the models serving (with their versions) and those
    not (yet), e.g. "serving 2 model(s): a v3, b v1; not serving: c (loading)"."""
    from .errors import ServingError
    from .servable import ManagerState

    serving, other = [], []
    for name in manager.model_names():
        try:
            rows = manager.status(name)
        except ServingError:  # known, but no version seen yet
            other.append(f"{name} (no version)")
            continue
        available = [f"v{r.version}" for r in rows if r.state == ManagerState.AVAILABLE]
        if available:
            serving.append(f"{name} {','.join(available)}")
        else:
            state = min(rows, key=lambda r: r.state).state.name.lower() if rows else "no version"
            other.append(f"{name} ({state})")
    text = f"serving {len(serving)} model(s)" + (": " + ", ".join(serving) if serving else "")
    if other:
        text += "; not serving: " + ", ".join(other)
    # One line: a model name holding a line break would start a notify field of its own.
    return text.replace("\r", "\\r").replace("\n", "\\n")
