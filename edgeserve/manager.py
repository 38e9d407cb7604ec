"""The manager: carries out the version policy and hands out ref-counted servable handles.

It owns every model's versions and their states (TF Serving's ManagerState walk:
START -> LOADING -> AVAILABLE -> UNLOADING -> END, with the last error), runs loads
and unloads on threads, retries failed loads, and resolves a request's (name,
version | label) to one loaded version whose reference count keeps it alive until
the request is done. All state lives on the event loop: no locks.

Memory and transitions (--total_model_memory_limit_bytes, --version_transition_policy):
before a version loads, its estimated cost is checked against the budget. It loads
beside the old version when both fit (availability), after the old one is unloaded
when only one fits (resource; `auto` picks), and is refused with RESOURCE_EXHAUSTED
and the figures in its status when even that would not fit — unless another load or
unload is under way, which may free memory; then it waits, as in TF Serving's
BasicManager. A refused version is tried again whenever an unload frees memory.

A resource swap leaves a gap with no version serving. Requests that arrive in it
are held (bounded by their deadline) and served by the new version. If the new
version fails to load, it is not retried until its files change, and the version
it replaced is loaded again (the fallback), so a broken upload never leaves a
model without a version.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from . import memory, metrics
from .errors import ServingError, StatusCode, internal, invalid_argument, not_found
from .policy import AVAILABILITY, REFUSE, RESOURCE, WAIT, VersionView, choose_mode, next_action, pending_load
from .resources import ResourceTracker, estimate_bytes, format_bytes
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
        "fallback", "swapped_out", "refused",
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
        self.swapped_out = False  # unloaded to make room for a new version (resource swap)
        self.fallback = False  # being served again because the new version failed
        self.refused = False  # END because it did not fit the memory budget

    def view(self) -> VersionView:
        return VersionView(self.state, self.aspired or self.fallback, self.failed)

    def file_bytes(self) -> int:
        return self.fingerprint[1]


class _Model:
    __slots__ = ("name", "versions", "latest", "labels", "busy", "copying", "gap")

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[int, LoadedVersion] = {}
        self.latest: LoadedVersion | None = None  # highest AVAILABLE version
        self.labels: dict[str, int] = {}
        self.busy = False  # a load or unload of this model is under way
        self.copying: frozenset[int] = frozenset()  # version folders still being written
        # Set while a resource swap leaves no version serving; requests wait on it.
        self.gap: asyncio.Event | None = None


class Manager:
    def __init__(
        self,
        loader_factory: LoaderFactory,
        *,
        load_executor: Executor,
        unload_executor: Executor,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        transition_policy: str = "availability",
        resources: ResourceTracker | None = None,
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
        self._policy = transition_policy  # "availability" | "resource" | "auto"
        self.resources = resources if resources is not None else ResourceTracker()
        self._waiting: set[str] = set()  # models whose next load waits for memory

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
        # Versions the source had dropped (their folder went away, or the policy chose
        # others) and lists again: a new start, as in TF Serving, which forgets a
        # version once it leaves the aspired set. Without this, a folder removed while
        # its version loaded and then put back as it was (cp -a, rsync -a: same files,
        # same mtimes, so the same fingerprint) stayed END with its "not found" error
        # for good (tests/test_faults.py, test_folders_removed_mid_load...).
        returning = {number for number, ver in model.versions.items() if not ver.aspired}
        for number, ver in model.versions.items():
            ver.aspired = number in wanted
            if not ver.aspired:
                if ver.state == ManagerState.START and not ver.fallback:
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
            if ver.state == ManagerState.END and (changed or not ver.failed or number in returning):
                # Re-aspired after an unload or after it left the aspired set, or its
                # files changed since it failed or was refused (a copy that was still
                # under way, a smaller export): start over.
                ver.state, ver.error, ver.failed, ver.refused = ManagerState.START, None, False, False
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
        self._choose_fallback(model)
        while True:
            views = {v: ver.view() for v, ver in model.versions.items()}
            preserve = self._preserve_resources(model, views)
            if preserve is not None:
                break
        self._update_gap(model, views)
        if preserve == "wait":
            return
        action = next_action(views, preserve_resources=preserve)
        if action is None:
            return
        ver = model.versions[action.version]
        serving = any(v.aspired and v.state == ManagerState.AVAILABLE for v in views.values())
        if action.kind == "unload" and pending_load(views) is not None and not serving:
            ver.swapped_out = True  # a resource swap: the gap starts now
            if model.gap is None:
                model.gap = asyncio.Event()
        model.busy = True
        coro = self._load(model, ver) if action.kind == "load" else self._unload(model, ver)
        self._spawn(coro)

    def _preserve_resources(self, model: _Model, views: dict[int, VersionView]):
        """How the next version of `model` loads: False = beside the old one
        (availability), True = after it (resource), "wait" = not now (memory may
        come free); None = it was refused here, look again."""
        number = pending_load(views)
        if number is None:
            return self._policy == RESOURCE
        ver = model.versions[number]
        need = estimate_bytes(ver.file_bytes())
        free = self.resources.free()
        reclaimable = 0 if self._policy == AVAILABILITY else sum(
            self.resources.cost(other.id) for n, other in model.versions.items()
            if not views[n].aspired and other.state == ManagerState.AVAILABLE
        )
        others_busy = any(other.busy for other in self._models.values())
        mode = choose_mode(self._policy, need, free, reclaimable, others_busy)
        if mode == WAIT:
            self._waiting.add(model.name)
            return "wait"
        if mode != REFUSE:
            return mode == RESOURCE
        message = (
            f"Insufficient resources to load servable {ver.id}: would exceed memory limit: "
            f"needs {format_bytes(need)}, free {format_bytes(max(0, free + reclaimable))} "
            f"(--total_model_memory_limit_bytes={self.resources.limit})"
        )
        if ver.error is None or ver.error.message != message:
            log.error("%s", message)
        ver.state, ver.failed, ver.refused = ManagerState.END, True, True
        ver.error = ServingError(StatusCode.RESOURCE_EXHAUSTED, message)
        return None

    @staticmethod
    def _choose_fallback(model: _Model) -> None:
        """After a resource swap whose new version failed, the newest version it
        replaced is loaded again; once an aspired version is live it steps aside."""
        versions = model.versions.values()
        if not any(v.aspired for v in versions):
            for v in versions:
                v.fallback = v.swapped_out = False  # the model is going away
            return
        live = any(
            v.aspired and v.state in (ManagerState.START, ManagerState.LOADING, ManagerState.AVAILABLE)
            for v in versions
        )
        if live:
            for v in versions:
                v.fallback = False
            if any(v.aspired and v.state == ManagerState.AVAILABLE for v in versions):
                for v in versions:
                    v.swapped_out = False
            return
        if any(v.fallback for v in versions):
            return
        candidates = [
            v for v in versions if v.swapped_out and v.state == ManagerState.END and not v.failed
        ]
        if candidates:
            ver = max(candidates, key=lambda v: v.id.version)
            log.warning("Loading servable version %s again: the version that replaced it failed", ver.id)
            ver.fallback, ver.state, ver.error = True, ManagerState.START, None

    @staticmethod
    def _update_gap(model: _Model, views: dict[int, VersionView]) -> None:
        """Ends the gap (wakes held requests) once a version serves or none will."""
        if model.gap is None:
            return
        pending = any(
            view.aspired and (view.state == ManagerState.START or (
                view.state == ManagerState.LOADING and model.versions[n].error is None))
            for n, view in views.items()
        )
        if model.latest is not None or not pending:
            model.gap.set()
            model.gap = None

    def _memory_freed(self) -> None:
        """An unload handed memory back: refused versions get another go."""
        for model in self._models.values():
            retry = False
            for ver in model.versions.values():
                if ver.refused and ver.aspired and ver.state == ManagerState.END:
                    ver.state, ver.failed, ver.refused = ManagerState.START, False, False
                    retry = True
            if retry:
                self._waiting.add(model.name)

    def _wake_waiting(self) -> None:
        waiting, self._waiting = self._waiting, set()
        for name in sorted(waiting):
            model = self._models.get(name)
            if model is not None:
                self._step(model)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, model: _Model, ver: LoadedVersion) -> None:
        loop = asyncio.get_running_loop()
        ver.state, ver.error = ManagerState.LOADING, None
        # A version loading in a resource swap gets one attempt: if it fails, the
        # one it replaced serves again at once instead of the model waiting out retries.
        swap = any(v.swapped_out for v in model.versions.values())
        self.resources.reserve(ver.id, estimate_bytes(ver.file_bytes()))
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
                    metrics.record_load(model.name, ver.path, False, time.monotonic() - started, error.code)
                    if self._stopping or not ver.aspired or attempt > self._max_retries or swap:
                        self.resources.release(ver.id)
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
                        self.resources.release(ver.id)
                        ver.state, ver.failed = ManagerState.END, True
                        if not self._stopping:
                            # The last line about it said "retrying": say it will not be
                            # (a folder removed while it loaded, tests/test_faults.py).
                            log.info(
                                "Not retrying servable version %s: it is no longer aspired (its folder "
                                "is gone, or the version policy chose others); last error: %s",
                                ver.id, error.message,
                            )
                        return
                    continue
                if self._stopping:
                    await loop.run_in_executor(self._unload_executor, servable.close)
                    self.resources.release(ver.id)
                    ver.state = ManagerState.END
                    return
                self.resources.loaded(ver.id, getattr(servable, "memory_bytes", None), ver.file_bytes())
                if self.resources.limited and self.resources.free() < 0:
                    # Only measurable after the fact; the next loads see the real figure.
                    log.warning(
                        "Servable version %s took %s, more than estimated: loaded versions now "
                        "hold %s of --total_model_memory_limit_bytes=%d",
                        ver.id, format_bytes(self.resources.cost(ver.id)),
                        format_bytes(self.resources.used()), self.resources.limit,
                    )
                ver.servable, ver.error = servable, None
                ver.state = ManagerState.AVAILABLE
                self._refresh_latest(model)
                seconds = time.monotonic() - started
                metrics.record_load(model.name, ver.path, True, seconds, StatusCode.OK)
                log.info("Successfully loaded servable version %s in %.2fs", ver.id, seconds)
                return
        finally:
            model.busy = False
            self._step(model)
            self._wake_waiting()

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
            self.resources.release(ver.id)
            self._memory_freed()
            ver.state = ManagerState.END
            seconds = time.monotonic() - started
            metrics.record_unload(model.name, seconds)
            log.info("Unloaded servable version %s in %.2fs", ver.id, seconds)
        finally:
            model.busy = False
            self._step(model)
            self._wake_waiting()

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

    async def acquire_or_wait(
        self, name: str, version: int | None = None, label: str | None = None, timeout_ms: int = 0
    ) -> LoadedVersion:
        """`acquire`, except that in a resource swap's gap a request for the model's
        latest version, or for the version being loaded, waits for it (at most
        `timeout_ms`, when > 0) instead of failing with NOT_FOUND."""
        try:
            return self.acquire(name, version, label)
        except ServingError as exc:
            if exc.code != StatusCode.NOT_FOUND:
                raise
            model = self._models.get(name)
            if model is None or model.gap is None:
                raise
            number = model.labels.get(label) if label is not None else version
            if number is not None:
                ver = model.versions.get(number)
                if ver is None or ver.state not in (ManagerState.START, ManagerState.LOADING):
                    raise  # not the version coming in: it will not come
            deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
            while model.gap is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ServingError(
                        StatusCode.DEADLINE_EXCEEDED,
                        f"Timed out waiting for a version of model {name} to finish loading",
                    ) from None
                try:
                    await asyncio.wait_for(model.gap.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            return self.acquire(name, version, label)

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

    def versions(self, name: str) -> list[LoadedVersion]:
        """The versions held for `name`, in any state (read by the metrics)."""
        model = self._models.get(name)
        return [] if model is None else list(model.versions.values())

    def version_available(self, name: str, version: int) -> bool:
        model = self._models.get(name)
        ver = model.versions.get(version) if model is not None else None
        return ver is not None and ver.state == ManagerState.AVAILABLE

    def label_version(self, name: str, label: str) -> int | None:
        """The version `label` points at for `name`, or None."""
        model = self._models.get(name)
        return None if model is None else model.labels.get(label)

    def labels(self, name: str) -> dict[str, int]:
        """A copy of `name`'s version labels (label -> version); empty for an unknown model."""
        model = self._models.get(name)
        return {} if model is None else dict(model.labels)

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
            if model.gap is not None:  # no new version is coming: held requests get NOT_FOUND
                model.gap.set()
                model.gap = None
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
