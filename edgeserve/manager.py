"""The manager: carries out the version policy and hands out ref-counted servable handles.

It owns every model's versions and their states (TF Serving's ManagerState walk:
START -> LOADING -> AVAILABLE -> UNLOADING -> END, with the last error), runs loads
and unloads on threads, retries failed loads, and resolves a request's (name,
version | label) to one loaded version whose reference count keeps it alive until
the request is done. All state lives on the event loop: no locks.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from . import memory
from .errors import ServingError, StatusCode, internal, invalid_argument, not_found
from .policy import VersionView, next_action
from .servable import Loader, ManagerState, Servable, ServableId
from .sources import AspiredVersion

log = logging.getLogger("edgeserve.manager")

LoaderFactory = Callable[[str, AspiredVersion], Loader]

# How a version folder that is still being written shows in GetModelStatus: START,
# code OK (nothing failed), and a message saying why it is not loading yet.
_COPYING = ServingError(StatusCode.OK, "waiting for the copy to finish (the folder is still changing)")


@dataclass(frozen=True)
class VersionStatus:
    """One row of GetModelStatus: version, state and the last error (None = OK)."""

    version: int
    state: ManagerState
    error: ServingError | None


class LoadedVersion:
    """One version of one model, as the manager tracks it.

    Requests see it only while AVAILABLE; `servable` and `runners` (per-signature
    run state the api layer keeps) are valid while `refs` > 0.
    """

    __slots__ = (
        "id", "state", "error", "failed", "aspired", "path", "fingerprint", "servable",
        "refs", "drained", "runners", "retry_now", "signature_def_map",
    )

    def __init__(self, servable_id: ServableId, aspired: AspiredVersion) -> None:
        self.id = servable_id
        self.state = ManagerState.START
        self.error: ServingError | None = None
        self.failed = False
        self.aspired = True
        self.path = aspired.path
        self.fingerprint = aspired.fingerprint
        self.servable: Servable | None = None
        self.refs = 0
        self.drained: asyncio.Event | None = None
        self.runners: dict = {}
        self.signature_def_map: bytes | None = None  # GetModelMetadata's, built once
        self.retry_now: asyncio.Event | None = None

    def view(self) -> VersionView:
        return VersionView(self.state, self.aspired, self.failed)


class _Model:
    __slots__ = ("name", "versions", "latest", "labels", "busy", "copying")

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[int, LoadedVersion] = {}
        self.latest: LoadedVersion | None = None  # highest AVAILABLE version
        self.labels: dict[str, int] = {}
        self.busy = False  # a load or unload of this model is under way
        self.copying: frozenset[int] = frozenset()  # version folders still being written


class Manager:
    def __init__(
        self,
        loader_factory: LoaderFactory,
        *,
        load_executor: Executor,
        unload_executor: Executor,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
    ) -> None:
        self._loader_factory = loader_factory
        self._load_executor = load_executor
        self._unload_executor = unload_executor
        self._max_retries = max(0, max_num_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_seconds)
        self._models: dict[str, _Model] = {}
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Event()
        self._stopping = False
        self._listeners: list[Callable[[str], None]] = []

    # ---- the source's side -------------------------------------------------

    def set_aspired_versions(
        self, name: str, versions: list[AspiredVersion], copying: list[AspiredVersion] = ()
    ) -> None:
        """The source's callback: these versions of `name` should be served; `copying`
        are folders still being written (reported in status, not loaded)."""
        if self._stopping:
            return
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model(name)
        model.copying = frozenset(a.version for a in copying)
        wanted = {a.version: a for a in versions}
        for number, ver in model.versions.items():
            ver.aspired = number in wanted
            if not ver.aspired:
                if ver.state == ManagerState.START:
                    ver.state = ManagerState.END  # never loaded: nothing to undo
                if ver.retry_now is not None:
                    ver.retry_now.set()  # stop waiting to retry a version nobody wants
        for number, aspired in wanted.items():
            ver = model.versions.get(number)
            if ver is None:
                model.versions[number] = LoadedVersion(ServableId(name, number), aspired)
                continue
            changed = aspired.fingerprint != ver.fingerprint
            ver.path, ver.fingerprint = aspired.path, aspired.fingerprint
            if ver.state == ManagerState.END and (changed or not ver.failed):
                # Re-aspired after an unload, or its files changed since it failed
                # (a copy that was still under way): start over.
                ver.state, ver.error, ver.failed = ManagerState.START, None, False
            elif changed and ver.retry_now is not None:
                ver.retry_now.set()  # files changed while waiting to retry: retry now
        self._step(model)

    # ---- transitions -------------------------------------------------------

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Calls `listener(model name)` on the loop whenever that model's versions change."""
        self._listeners.append(listener)

    def _step(self, model: _Model) -> None:
        self._changed.set()  # wakes wait_until_settled to look again
        for listener in self._listeners:
            listener(model.name)
        if model.busy or self._stopping:
            return
        action = next_action({v: ver.view() for v, ver in model.versions.items()})
        if action is None:
            return
        ver = model.versions[action.version]
        model.busy = True
        coro = self._load(model, ver) if action.kind == "load" else self._unload(model, ver)
        self._spawn(coro)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, model: _Model, ver: LoadedVersion) -> None:
        loop = asyncio.get_running_loop()
        ver.state = ManagerState.LOADING
        attempt = 0
        try:
            while True:
                attempt += 1
                started = time.monotonic()
                log.info("Loading servable version %s from %s", ver.id, ver.path)
                try:
                    loader = self._loader_factory(model.name, AspiredVersion(ver.id.version, ver.path, ver.fingerprint))
                    servable = await loop.run_in_executor(self._load_executor, loader.load)
                except Exception as exc:  # a load must never take the server down
                    error = exc if isinstance(exc, ServingError) else internal(f"{type(exc).__name__}: {exc}")
                    ver.error = error
                    if self._stopping or not ver.aspired or attempt > self._max_retries:
                        ver.state, ver.failed = ManagerState.END, True
                        log.error(
                            "Loading servable version %s failed after %d attempt(s) in %.2fs: %s",
                            ver.id, attempt, time.monotonic() - started, error.message,
                        )
                        return
                    log.warning(
                        "Loading servable version %s failed (attempt %d of %d), retrying in %.1fs "
                        "or as soon as its files change: %s",
                        ver.id, attempt, self._max_retries + 1, self._retry_interval, error.message,
                    )
                    ver.retry_now = asyncio.Event()
                    self._changed.set()
                    try:
                        await asyncio.wait_for(ver.retry_now.wait(), self._retry_interval)
                    except asyncio.TimeoutError:
                        pass
                    ver.retry_now = None
                    if not ver.aspired or self._stopping:
                        ver.state, ver.failed = ManagerState.END, True
                        return
                    continue
                if self._stopping:
                    await loop.run_in_executor(self._unload_executor, servable.close)
                    ver.state = ManagerState.END
                    return
                ver.servable, ver.error = servable, None
                ver.state = ManagerState.AVAILABLE
                self._refresh_latest(model)
                log.info(
                    "Successfully loaded servable version %s in %.2fs", ver.id, time.monotonic() - started
                )
                return
        finally:
            model.busy = False
            self._step(model)

    async def _unload(self, model: _Model, ver: LoadedVersion) -> None:
        loop = asyncio.get_running_loop()
        try:
            ver.state = ManagerState.UNLOADING
            self._refresh_latest(model)  # no new request can take it from here on
            if ver.refs:
                ver.drained = asyncio.Event()
                await ver.drained.wait()
            started = time.monotonic()
            servable, ver.servable = ver.servable, None
            ver.runners, ver.signature_def_map = {}, None
            if servable is not None:
                try:
                    await loop.run_in_executor(self._unload_executor, servable.close)
                except Exception as exc:  # logged; the version is gone either way
                    log.error("Unloading servable version %s raised: %s", ver.id, exc)
                servable = None  # the last reference: what it held can be freed now
                await loop.run_in_executor(self._unload_executor, memory.release)
            ver.state = ManagerState.END
            log.info("Unloaded servable version %s in %.2fs", ver.id, time.monotonic() - started)
        finally:
            model.busy = False
            self._step(model)

    @staticmethod
    def _refresh_latest(model: _Model) -> None:
        available = [v for v in model.versions.values() if v.state == ManagerState.AVAILABLE]
        model.latest = max(available, key=lambda v: v.id.version) if available else None

    # ---- the request side --------------------------------------------------

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """Takes a reference to one AVAILABLE version; pair with `release`.

        Raises TF Serving's errors: NOT_FOUND "Servable not found for request:
        Latest(name)" / "Specific(name, version)", INVALID_ARGUMENT for an unknown label.
        """
        model = self._models.get(name)
        if label is not None:
            if model is None or label not in model.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = model.labels[label]
        if version is None:
            ver = model.latest if model is not None else None
            if ver is None:
                raise not_found(f"Servable not found for request: Latest({name})")
        else:
            ver = model.versions.get(version) if model is not None else None
            if ver is None or ver.state != ManagerState.AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
        ver.refs += 1
        return ver

    @staticmethod
    def release(ver: LoadedVersion) -> None:
        ver.refs -= 1
        if ver.refs == 0 and ver.drained is not None:
            ver.drained.set()

    @asynccontextmanager
    async def handle(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AsyncIterator[LoadedVersion]:
        ver = self.acquire(name, version, label)
        try:
            yield ver
        finally:
            self.release(ver)

    # ---- status ------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def version_available(self, name: str, version: int) -> bool:
        model = self._models.get(name)
        ver = model.versions.get(version) if model is not None else None
        return ver is not None and ver.state == ManagerState.AVAILABLE

    def label_version(self, name: str, label: str) -> int | None:
        """The version `label` points at for `name`, or None."""
        model = self._models.get(name)
        return None if model is None else model.labels.get(label)

    def set_labels(self, name: str, labels: dict[str, int]) -> None:
        """Replaces a model's version labels (checked by the caller against the rules).
        A request that resolved a label keeps the version it took; the next one sees
        the new map."""
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model(name)
        model.labels = dict(labels)

    def is_available(self, name: str) -> bool | None:
        """Whether `name` has an AVAILABLE version; None for a model never heard of."""
        model = self._models.get(name)
        return None if model is None else model.latest is not None

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus with TF Serving's NOT_FOUND messages."""
        model = self._models.get(name)
        rows: dict[int, VersionStatus] = {}
        if model is not None:
            for number in model.copying:
                rows[number] = VersionStatus(number, ManagerState.START, _COPYING)
            for number, ver in model.versions.items():
                if number not in rows or ver.state != ManagerState.END:
                    rows[number] = VersionStatus(number, ver.state, ver.error)
        if version is not None:
            if version not in rows:
                raise not_found(f"Could not find version {version} of model {name}")
            return [rows[version]]
        if not rows:
            raise not_found(f"Could not find any versions of model {name}")
        return [rows[v] for v in sorted(rows, reverse=True)]

    def settled(self) -> bool:
        """True when no version is waiting for its first load attempt or in one."""
        for model in self._models.values():
            for ver in model.versions.values():
                if ver.state == ManagerState.START and ver.aspired:
                    return False
                if ver.state == ManagerState.LOADING and ver.error is None:
                    return False
        return True

    async def wait_until_settled(self) -> None:
        while not self.settled():
            self._changed.clear()
            await self._changed.wait()

    # ---- shutdown ----------------------------------------------------------

    async def stop(self) -> None:
        """Unloads every version once its in-flight requests are done."""
        self._stopping = True
        for model in self._models.values():
            for ver in model.versions.values():
                if ver.retry_now is not None:
                    ver.retry_now.set()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        unloads = []
        for model in self._models.values():
            for ver in model.versions.values():
                ver.aspired = False
                if ver.state == ManagerState.AVAILABLE:
                    unloads.append(self._unload(model, ver))
        if unloads:
            await asyncio.gather(*unloads, return_exceptions=True)
