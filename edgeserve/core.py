"""ServerCore: the model config in force, and how a new one is applied.

Named after TF Serving's ServerCore, whose ReloadConfig this mirrors: one code path for
the start-up config, the config file's polls, SIGHUP and HandleReloadConfigRequest.
A new config is checked whole first (its parse, its platforms, its labels against the
versions serving now) and rejected whole if anything is wrong; then it is diffed
against the old one: new models get a source, removed models lose theirs and are
unloaded once their requests finish, changed base paths or policies are re-polled at
once, unchanged models are left alone, labels are swapped in one step. The sources
and the manager do the rest. `--model_repository` adds every sub-folder of a folder as
a model with the default policy; entries of the config file win over it.
"""
from __future__ import annotations

import asyncio
import logging
import os

from typing import Callable

import aiofiles

from .config import (
    TENSORFLOW_PLATFORM,
    ConfigError,
    ModelConfig,
    ServerConfig,
    check_labels,
    check_transition,
    from_reload_config_request,
    parse_config_text,
)
from .errors import ServingError, StatusCode
from .manager import Manager
from .request_log import RequestLog, folder_problem
from .sources import FileSystemSource, VersionPolicy, parse_version

log = logging.getLogger("edgeserve.core")


class ServerCore:
    def __init__(
        self,
        manager: Manager,
        *,
        file_system_poll_wait_seconds: float,
        allow_version_labels_for_unavailable_models: bool = False,
        model_config_file: str = "",
        model_repository: str = "",
        request_log: RequestLog | None = None,
    ) -> None:
        self.manager = manager
        self.request_log = request_log  # told each config's logging_configs
        self.poll_wait_seconds = file_system_poll_wait_seconds
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self.model_config_file = model_config_file
        self.model_repository = model_repository
        self.config: ServerConfig | None = None  # the config given (file, flags or gRPC)
        # One source per model served (repository included); each knows its base path
        # and policy, which is what a new config is diffed against.
        self._sources: dict[str, FileSystemSource] = {}
        self._repository_models: tuple[str, ...] = ()
        self._file_text: str | None = None  # the config file's text last applied
        self._refusal: str | None = None  # why, logged once while it lasts
        self._lock = asyncio.Lock()  # one reload at a time
        self._polling = False
        self._tasks: list[asyncio.Task] = []

    # ---- reading configs ----------------------------------------------------------

    async def read_config_file(self) -> tuple[str, ServerConfig]:
        """The config file, read whole and parsed; ConfigError when it cannot be used."""
        text = await self._read_config_text()
        return text, self._parse_config_text(text)

    async def _read_config_text(self) -> str:
        path = self.model_config_file
        try:
            # newline="": a lone "\r" is not a line end to protobuf's parser (as in TF
            # Serving), so universal newlines would end a comment early.
            async with aiofiles.open(path, "r", encoding="utf-8", newline="") as f:
                return await f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read --model_config_file {path}: {exc}") from None

    def _parse_config_text(self, text: str) -> ServerConfig:
        # An empty file is refused: a file caught half-written must never mean "no models".
        if not text.strip():
            raise ConfigError(f"--model_config_file {self.model_config_file} is empty")
        return parse_config_text(text, self.model_config_file, previous=self.config)

    def _repository_configs(self) -> dict[str, ModelConfig]:
        """Every sub-folder of --model_repository that is not itself a version folder."""
        configs: dict[str, ModelConfig] = {}
        for name in self._repository_models:
            configs[name] = ModelConfig(
                name=name,
                base_path=os.path.join(self.model_repository, name),
                platform=TENSORFLOW_PLATFORM,
                version_policy=VersionPolicy(),
                version_labels=(),
            )
        return configs

    def model_names(self) -> list[str]:
        """Every model the config in force (and --model_repository) serves."""
        return sorted(self._sources)

    def platform(self, name: str) -> str:
        """The model's platform in the config in force ("tensorflow" when it has none:
        --model_repository models, whose runtime the version's files decide)."""
        if self.config is not None:
            for model in self.config.models:
                if model.name == name:
                    return model.platform
        return TENSORFLOW_PLATFORM

    def _effective(self, config: ServerConfig | None) -> dict[str, ModelConfig]:
        models = self._repository_configs()
        if config is not None:
            models.update({m.name: m for m in config.models})  # the file's entries win
        return models

    # ---- applying -------------------------------------------------------------------

    async def apply(self, config: ServerConfig | None, *, first: bool = False) -> str | None:
        """Makes `config` the one in force (None: repository only); ConfigError leaves
        the old one untouched. The first config's labels are set once its first loads
        are done (TF Serving refuses labels on versions that have not loaded yet).

        Returns once the models it adds have had their first load attempt, as TF
        Serving's ReloadConfig waits for them: None when all are available, else TF
        Serving's "N model(s) did not become available: {...}" text (the config is in
        force either way)."""
        async with self._lock:
            if self.config is not None and config is not None:
                check_transition(self.config, config)
            if not first and config is not None:
                self._check_labels(config)
                await self._check_new_base_paths(config)
                await self._check_new_logging_folders(config)
            previous, self.config = self.config, config
            self._update_request_log()
            if not first:
                # Labels move first: they point at versions serving now, and a version
                # the new config drops may start unloading while the models change.
                self._set_labels()
            try:
                added = await self._apply_models(self._effective(config))
            except BaseException:
                self.config = previous
                self._update_request_log()
                raise
            await self.manager.wait_until_settled()
            if first:
                if config is not None:
                    self._check_labels(config)
                self._set_labels()
                return None
            return self._unavailable(added)

    def _unavailable(self, names: list[str]) -> str | None:
        missing = [name for name in names if not self.manager.is_available(name)]
        if not missing:
            return None
        parts = []
        for name in missing:
            try:
                statuses = self.manager.status(name)
            except ServingError:  # no version folder found at all
                parts.append(f"{{name: {name}}} due to error: no versions found under its base path")
                continue
            for status in statuses:
                error = f" due to error: {status.error.message}" if status.error else ""
                parts.append(f"{{name: {name} version: {status.version}}}{error}")
        return f"{len(missing)} model(s) did not become available: {{" + "".join(p + ", " for p in parts) + "}"

    async def _check_new_base_paths(self, config: ServerConfig) -> None:
        """A reload that points a model at a folder that is not there (a typo, a copy not
        made yet) is refused whole; at start-up such a model is just polled until it
        appears, as in TF Serving. Unchanged models are not checked: a base path that
        is briefly unreadable must not block every other change."""
        fresh = [
            m for m in config.models
            if (source := self._sources.get(m.name)) is None or source.base_path != m.base_path
        ]

        def problem(model: ModelConfig) -> str | None:
            if not os.path.isdir(model.base_path):
                return f"Could not find base path {model.base_path} for servable {model.name}"
            if not os.access(model.base_path, os.R_OK | os.X_OK):
                return f"Cannot read base path {model.base_path} for servable {model.name}"
            return None

        await _refuse_on_problems(lambda: [p for p in map(problem, fresh) if p])

    async def _check_new_logging_folders(self, config: ServerConfig) -> None:
        """A reload whose new logging_config points at a folder that is missing or
        read-only is refused whole, like a new base path; at start-up such logging
        pauses (said in the log) and serving goes on. Unchanged prefixes are not checked."""
        if self.request_log is None:
            return
        current = {c.filename_prefix for c in self.request_log.models().values()}
        fresh = {m.name: m.logging.filename_prefix for m in config.models
                 if m.logging is not None and m.logging.filename_prefix not in current}

        def problems() -> list[str]:
            found = ((name, prefix, folder_problem(prefix)) for name, prefix in fresh.items())
            return [f"Cannot write the request logs of model {name} to {prefix}: {problem}"
                    for name, prefix, problem in found if problem]

        await _refuse_on_problems(problems)

    def _update_request_log(self) -> None:
        if self.request_log is not None:
            self.request_log.update(self._effective(self.config).values())

    def _check_labels(self, config: ServerConfig) -> None:
        check_labels(
            config,
            self.manager.version_available,
            self.manager.label_version,
            self.allow_unavailable_labels,
        )

    def _set_labels(self) -> None:
        configured = {m.name: dict(m.version_labels) for m in (self.config.models if self.config else ())}
        for name in set(self.manager.model_names()) | set(configured):
            self.manager.set_labels(name, configured.get(name, {}))

    async def _apply_models(self, wanted: dict[str, ModelConfig]) -> list[str]:
        """Diffs `wanted` against the models served and carries it out; the names added."""
        polls = []
        added = []
        for name, model in wanted.items():
            source = self._sources.get(name)
            if source is None:
                log.info("Adding model %s from %s", name, model.base_path)
                source = FileSystemSource(
                    name, model.base_path, self.manager.set_aspired_versions,
                    policy=model.version_policy, poll_wait_seconds=self.poll_wait_seconds,
                )
                self._sources[name] = source
                added.append(name)
                polls.append(self._first_poll(source))
            elif (source.base_path, source.policy) != (model.base_path, model.version_policy):
                log.info("Updating model %s: base path %s, policy %s", name, model.base_path, model.version_policy)
                source.retarget(model.base_path, model.version_policy)
                polls.append(source.poll_once())
        for name in set(self._sources) - set(wanted):
            log.info("Removing model %s: its versions unload once their requests finish", name)
            source = self._sources.pop(name)
            await source.stop()
            self.manager.set_aspired_versions(name, [])
        if polls:
            await asyncio.gather(*polls)
        return added

    async def _first_poll(self, source: FileSystemSource) -> None:
        await source.poll_once()
        if self._polling and self.poll_wait_seconds > 0:
            source.start_after(self.poll_wait_seconds)

    # ---- the three ways in: file polls, SIGHUP, gRPC ----------------------------------

    async def reload_config_file(self, *, only_if_changed: bool = False) -> bool:
        """Re-reads --model_config_file and applies it; False (logged) when refused."""
        text = None
        try:
            text = await self._read_config_text()
            if only_if_changed and text == self._file_text:
                return True
            # A refused text is checked again on every poll, as TF Serving's poll calls
            # ReloadConfig each time: a refusal may hang on the file system (a missing
            # base path or logging folder) that the operator then fixes. It is said once.
            config = self._parse_config_text(text)
            unavailable = await self.apply(config)
        except ConfigError as exc:
            if not only_if_changed or exc.message != self._refusal:  # polls say it once
                log.error("Model config reload refused; the config in force stays: %s", exc)
            self._refusal = exc.message
            return False
        self._file_text, self._refusal = text, None
        if unavailable:
            log.error("Model config from %s is in force, but %s", self.model_config_file, unavailable)
        log.info("Model config reloaded from %s (%d models)", self.model_config_file, len(config.models))
        return True

    async def reload_on_signal(self) -> str | None:
        """SIGHUP: the config file (when there is one) and the repository, at once;
        the refusal's text when the file's config was refused (None: applied)."""
        if self.model_repository:
            await self._rescan_repository()
        if self.model_config_file and not await self.reload_config_file():
            return self._refusal
        return None

    async def reload_from_message(self, message) -> None:
        """HandleReloadConfigRequest: the ModelServerConfig a client sent replaces the one
        in force; ServingError (TF Serving's code and text) when refused."""
        try:
            config = from_reload_config_request(message, previous=self.config)
            unavailable = await self.apply(config)
        except ConfigError as exc:
            log.error("ReloadConfig failed: %s", exc)
            raise
        if unavailable:
            log.error("ReloadConfig: the new config is in force, but %s", unavailable)
            raise ServingError(StatusCode.UNKNOWN, unavailable)
        log.info("Model config replaced by HandleReloadConfigRequest (%d models)", len(config.models))

    async def load_initial_config(self, config: ServerConfig | None, file_text: str | None = None) -> None:
        if self.model_repository:
            self._repository_models = await self._scan_repository() or ()
        self._file_text = file_text
        await self.apply(config, first=True)

    def start_polling(self, config_file_poll_wait_seconds: int) -> None:
        """After start-up: sources poll on; the config file and repository are watched."""
        self._polling = True
        if self.poll_wait_seconds > 0:
            for source in self._sources.values():
                source.start_after(self.poll_wait_seconds)
        loop = asyncio.get_running_loop()
        if self.model_config_file and config_file_poll_wait_seconds > 0:
            self._tasks.append(loop.create_task(self._poll_config_file(config_file_poll_wait_seconds)))
        if self.model_repository and self.poll_wait_seconds > 0:
            self._tasks.append(loop.create_task(self._poll_repository()))

    async def _poll_config_file(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.reload_config_file(only_if_changed=True)

    async def _scan_repository(self) -> tuple[str, ...] | None:
        def scan() -> tuple[str, ...]:
            return tuple(sorted(
                entry.name for entry in os.scandir(self.model_repository)
                if entry.is_dir() and not entry.name.startswith(".") and parse_version(entry.name) is None
            ))

        try:
            return await asyncio.get_running_loop().run_in_executor(None, scan)
        except OSError as exc:
            log.error("Cannot list --model_repository %s: %s", self.model_repository, exc)
            return None

    async def _poll_repository(self) -> None:
        while True:
            await asyncio.sleep(self.poll_wait_seconds)
            await self._rescan_repository()

    async def _rescan_repository(self) -> None:
        """Adds and drops repository models after their folders came or went."""
        found = await self._scan_repository()
        if found is None or found == self._repository_models:
            return  # unreadable: keep serving what is there
        log.info("Model repository %s now holds: %s", self.model_repository, ", ".join(found) or "nothing")
        async with self._lock:
            self._repository_models = found
            await self._apply_models(self._effective(self.config))
            self._set_labels()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for source in self._sources.values():
            await source.stop()


async def _refuse_on_problems(problems: Callable[[], list[str]]) -> None:
    """Runs file system checks off the loop; a config they find problems with is
    refused with all of them."""
    found = await asyncio.get_running_loop().run_in_executor(None, problems)
    if found:
        raise ConfigError("; ".join(found))
