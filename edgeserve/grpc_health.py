"""The standard grpc.health.v1 Health service, answering with real model states.

grpclib's own `Health` service does the protocol (Check, Watch); this module gives it
checks: the server itself under "" (and under TF Serving's "ModelService" and
"PredictionService" names) is SERVING while it serves and NOT_SERVING once it drains;
each model name is SERVING while the model has an AVAILABLE version. A name that is
neither is unknown (NOT_FOUND), as the protocol says. States come from the manager;
nothing here changes them.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Iterator

from grpclib.health.check import CheckBase
from grpclib.health.service import Health

from .manager import Manager

# The names TF Serving's health service marks SERVING (server.cc), plus the full
# service names, which is what grpc_health_probe users tend to type.
SERVER_NAMES = frozenset({
    "", "ModelService", "PredictionService",
    "tensorflow.serving.ModelService", "tensorflow.serving.PredictionService",
})


class _Check(CheckBase):
    """One health-checked name; Watch subscribers are woken on every change."""

    def __init__(self, status) -> None:
        self._status = status
        self._events: set[asyncio.Event] = set()

    def __status__(self) -> bool:
        return bool(self._status())

    async def __check__(self) -> bool:
        return self.__status__()

    async def __subscribe__(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.add(event)
        return event

    async def __unsubscribe__(self, event: asyncio.Event) -> None:
        self._events.discard(event)

    def changed(self) -> None:
        for event in self._events:
            event.set()


class _Checks(Mapping):
    """Service name -> checks, as grpclib's Health looks them up; models come and go."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager
        self.serving = True
        self.server_check = _Check(lambda: self.serving)
        self._model_checks: dict[str, _Check] = {}

    def model_check(self, name: str) -> _Check:
        check = self._model_checks.get(name)
        if check is None:
            check = self._model_checks[name] = _Check(lambda: self._manager.is_available(name))
        return check

    def __getitem__(self, name: str) -> set:
        if name in SERVER_NAMES:
            return {self.server_check}
        if self._manager.is_available(name) is None:
            raise KeyError(name)
        return {self.model_check(name)}

    def __iter__(self) -> Iterator[str]:
        return iter([*SERVER_NAMES, *self._manager.model_names()])

    def __len__(self) -> int:
        return len(SERVER_NAMES) + len(self._manager.model_names())


class ModelHealth(Health):
    """grpclib's Health service over the manager's model states."""

    def __init__(self, manager: Manager) -> None:
        super().__init__()
        self._checks = _Checks(manager)  # replaces grpclib's fixed table
        manager.add_listener(self._model_changed)

    def _model_changed(self, name: str) -> None:
        check = self._checks._model_checks.get(name)
        if check is not None:
            check.changed()

    def set_serving(self, serving: bool) -> None:
        """The server's own status: False while it drains for shutdown."""
        self._checks.serving = serving
        self._checks.server_check.changed()
