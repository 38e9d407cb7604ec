"""The file-system source: turns a model's base path and version policy into aspired versions.

It knows files only (TF Serving's FileSystemStoragePathSource): every
`poll_wait_seconds` it lists the base path on a worker thread, keeps numeric
sub-folders as versions (`00000123` is version 123), applies the version policy and
calls back with the aspired versions. It never loads anything. Each aspired version
carries a fingerprint of its files (count, bytes, newest mtime) so the manager can
tell a folder that is still being copied from one that is finished.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("edgeserve.source")


@dataclass(frozen=True)
class VersionPolicy:
    """ServableVersionPolicy: latest N (default 1), all, or specific versions."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: frozenset[int] = field(default_factory=frozenset)

    def select(self, available: list[int]) -> list[int]:
        if self.kind == "all":
            return sorted(available)
        if self.kind == "specific":
            return sorted(v for v in available if v in self.versions)
        return sorted(available)[-max(self.num_versions, 1):] if available else []


@dataclass(frozen=True)
class AspiredVersion:
    version: int
    path: str
    fingerprint: tuple[int, int, int]


# (model name, aspired versions, versions whose folders are still being copied)
AspiredVersionsCallback = Callable[[str, list[AspiredVersion], list[AspiredVersion]], None]


def parse_version(name: str) -> int | None:
    """A folder name that is a non-negative decimal number is a version."""
    if name.isascii() and name.isdigit():
        return int(name)
    return None


def fingerprint(path: str) -> tuple[int, int, int]:
    """(files, bytes, newest mtime in ns) of a version folder; changes while it is written."""
    files = size = newest = 0
    for root, dirs, names in os.walk(path):
        for n in (*names, *dirs):
            try:
                st = os.stat(os.path.join(root, n))
            except OSError:
                continue
            files += 1
            size += st.st_size if n in names else 0
            newest = max(newest, st.st_mtime_ns)
    return files, size, newest


def list_versions(
    name: str,
    base_path: str,
    policy: VersionPolicy,
    is_copying: Callable[[int, tuple[int, int, int]], bool] | None = None,
) -> tuple[list[AspiredVersion], list[AspiredVersion]]:
    """One poll: (the aspired versions, the versions still being copied). Raises OSError
    when the base path cannot be read.

    `is_copying(version, fingerprint)` says whether a folder is still being written;
    such a version is left out and the policy chooses among the others, so the version
    serving now stays aspired until the new one is complete. The caller says nothing
    to the manager on OSError: like TF Serving, a missing or unreadable base path never
    becomes an empty list, so a transient failure unloads nothing.
    """
    try:
        entries = list(os.scandir(base_path))
    except OSError as exc:
        raise FileNotFoundError(
            f"Could not find base path {base_path} for servable {name} with error {exc}"
        ) from None
    by_version: dict[int, str] = {}
    for entry in entries:
        version = parse_version(entry.name)
        if version is None:
            continue
        # Not checked to be a folder, as in TF Serving: a stray file or a symlink loop
        # named like a version is a version whose load fails and says why in its
        # status (and is_dir() on a loop raised, which failed every poll).
        if version in by_version:
            log.warning(
                "Duplicate version directories detected. Version %d will be loaded from %s, "
                "%s will be ignored.", version, entry.path, by_version[version],
            )
            if entry.name > os.path.basename(by_version[version]):
                continue
        by_version[version] = entry.path
    copying: dict[int, AspiredVersion] = {}
    while True:
        chosen = policy.select([v for v in by_version if v not in copying])
        aspired = [AspiredVersion(v, by_version[v], fingerprint(by_version[v])) for v in chosen]
        fresh = [a for a in aspired if is_copying is not None and is_copying(a.version, a.fingerprint)]
        if not fresh:
            break
        copying.update((a.version, a) for a in fresh)  # choose again without them
    if not chosen and not copying:
        log.warning(
            "No versions of servable %s found under base path %s. Did you forget to name "
            "your leaf directory as a number (eg. '/1/')?", name, base_path,
        )
    return aspired, sorted(copying.values(), key=lambda a: a.version)


class FileSystemSource:
    """Polls one model's base path on the event loop; the listing runs on a thread."""

    def __init__(
        self,
        name: str,
        base_path: str,
        callback: AspiredVersionsCallback,
        *,
        policy: VersionPolicy = VersionPolicy(),
        poll_wait_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self.base_path = base_path
        self.policy = policy
        self.poll_wait_seconds = poll_wait_seconds
        self._callback = callback
        self._task: asyncio.Task | None = None
        self._last_error: str | None = None
        self._reset_copy_tracking()

    def _reset_copy_tracking(self) -> None:
        # The first poll of a base path takes its folders as complete (they were there
        # before we looked); a folder that appears later is a copy under way until a
        # poll finds it unchanged since the one before.
        self._polled = False
        self._emitted: set[int] = set()  # versions once aspired: never held back again
        self._copying: dict[int, tuple[int, int, int]] = {}  # fingerprints at the last poll

    def retarget(self, base_path: str, policy: VersionPolicy) -> None:
        """A new base path or policy (a config reload); the next poll applies it."""
        if base_path != self.base_path:
            self._reset_copy_tracking()
        self.base_path, self.policy = base_path, policy

    def _is_copying(self, version: int, fingerprint: tuple[int, int, int]) -> bool:
        if not self._polled or version in self._emitted:
            return False
        return self._copying.get(version) != fingerprint

    async def poll_once(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            versions, copying = await loop.run_in_executor(
                None, list_versions, self.name, self.base_path, self.policy, self._is_copying
            )
        except OSError as exc:
            message = str(exc)
            # TF Serving logs this on every poll; once per change is enough to read.
            if message != self._last_error:
                log.error(
                    "FileSystemStoragePathSource encountered a filesystem access error: %s",
                    message,
                )
                self._last_error = message
            return
        if self._last_error is not None:
            log.info("Base path %s for servable %s is readable again", self.base_path, self.name)
            self._last_error = None
        self._polled = True
        self._emitted.update(a.version for a in versions)
        self._copying = {a.version: a.fingerprint for a in copying}
        self._callback(self.name, versions, copying)

    async def _run(self, delay: float = 0.0) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            await self.poll_once()
            if self.poll_wait_seconds <= 0:
                return  # 0: poll exactly once, as TF Serving does
            await asyncio.sleep(self.poll_wait_seconds)

    def start(self) -> None:
        self.start_after(0.0)

    def start_after(self, delay: float) -> None:
        """Polls on, every poll_wait_seconds, the first time after `delay` seconds."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(delay))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
