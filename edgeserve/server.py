"""Builds the parts from Options and runs them on one uvloop event loop.

Start: sources poll, the manager loads what exists (as TF Serving does, ports open
once the first load attempts are done), then the REST port listens. Stop (SIGTERM,
SIGINT): stop accepting, answer what was received within the grace period, unload
every version, exit 0.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import signal
import socket
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import batch_options, metrics, systemd
from .admission import Connections, Pending, raise_open_files_limit
from .api import Api
from .cli import Options
from .batch_options import BatchOptions
from .errors import ServingError
from .manager import Manager
from .resources import ResourceTracker
from .rest_api import HttpProtocol, Limits, RestApi
from .status_page import StatusPage
from .runtimes import choice
from .runtimes.savedmodel import SavedModelLoader
from .servable import Loader
from .sources import AspiredVersion
from .config import ConfigError, single_model
from .core import ServerCore
from .request_log import RequestLog

log = logging.getLogger("edgeserve.server")

SWEEP_SECONDS = 0.5  # how often slow and idle connections are looked at


class Server:
    def __init__(self, options: Options) -> None:
        self.options = options
        self._stop_requested: asyncio.Event | None = None
        self._connections: set[HttpProtocol] = set()
        self._listeners: list[asyncio.AbstractServer] = []
        self.core: ServerCore | None = None
        self._tasks: list[asyncio.Task] = []
        cpus = len(os.sched_getaffinity(0))
        # num_load_threads=0 means loads run one at a time in TF Serving too; on a
        # small box that also keeps peak RAM down.
        self._load_executor = ThreadPoolExecutor(max(1, options.num_load_threads), "load")
        self._unload_executor = ThreadPoolExecutor(max(1, options.num_unload_threads), "unload")
        self._run_executor = ThreadPoolExecutor(max(1, cpus), "run")
        self.manager: Manager | None = None
        self._grpc_servers: list[Any] = []  # grpclib Servers: TCP port, Unix socket
        self._grpc_calls: Any = None
        self._health: Any = None
        self._bound_socket_path: str | None = None  # ours to remove at exit
        self._batching: BatchOptions | None = None  # --enable_batching's parameters
        self._notifier = systemd.Notifier()
        self._inherited: list[socket.socket] = []  # socket activation's listeners
        self._status_pending = False
        self._pending = Pending(options.max_pending_requests)  # REST and gRPC together
        self._grpc_open = Connections(options.grpc_max_connections)  # --port and the socket
        self._rest: RestApi | None = None
        self._draining = False
        # Models with a logging_config: sampled requests, written by its own thread.
        self.request_log = RequestLog(
            max_file_bytes=options.request_log_max_file_bytes,
            max_total_bytes=options.request_log_max_total_bytes,
        )

    def _loader(self, name: str, aspired: AspiredVersion) -> Loader:
        """The loader for one version: its model's platform and files choose the runtime."""
        options = self.options
        platform = self.core.platform(name) if self.core is not None else choice.SAVEDMODEL
        if choice.runtime_for(aspired.path, platform, options.prefer_tflite_model) == choice.TFLITE:
            from .runtimes.tflite import TfLiteLoader  # imports LiteRT when it loads, not TensorFlow

            return TfLiteLoader(
                aspired.path,
                num_pools=options.num_tflite_pools,
                interpreters_per_pool=options.num_tflite_interpreters_per_pool,
                warmup=options.enable_model_warmup,
                warmup_iterations=options.num_request_iterations_for_warmup,
                batching=self._batching,
                per_model_batching=options.enable_per_model_batching_parameters,
            )
        if not choice.has_tensorflow():
            return _Refused(choice.lite_install_error(aspired.path))
        intra, inter = self.options.session_threads()
        return SavedModelLoader(
            aspired.path,
            tags=sorted(self.options.saved_model_tag_set()),
            intra_op_threads=intra,
            inter_op_threads=inter,
            warmup=self.options.enable_model_warmup,
            warmup_iterations=self.options.num_request_iterations_for_warmup,
            batching=self._batching,
            per_model_batching=self.options.enable_per_model_batching_parameters,
        )

    async def start(self) -> None:
        options = self.options
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        # Each connection is a file descriptor; models, logs and TF take some more.
        limits = (options.rest_api_max_connections, options.grpc_max_connections)
        raise_open_files_limit(sum(limits) + 256 if all(limits) else 1 << 20)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.manager = Manager(
            self._loader,
            load_executor=self._load_executor,
            unload_executor=self._unload_executor,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
            transition_policy=options.version_transition_policy,
            resources=ResourceTracker(options.total_model_memory_limit_bytes),
        )
        self.core = ServerCore(
            self.manager,
            file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            model_config_file=options.model_config_file,
            model_repository=options.model_repository,
            request_log=self.request_log,
        )
        grpc_import = None
        if options.port or options.grpc_socket_path:
            # grpclib and the message classes (~0.1 s): on a thread, while the first
            # versions load.
            grpc_import = loop.run_in_executor(None, importlib.import_module, "edgeserve.grpc_api")
        self._batching = _batching_options(options)
        metrics_path, status_page = _status_page(options, _metrics_path(options))
        if metrics_path and options.rest_api_port:
            metrics.enable()
            metrics.watch(self.manager)
            metrics.watch_admission(self._admission)
            metrics.watch_request_log(self.request_log.figures)
            self._tasks.append(loop.create_task(metrics.watch_loop_lag()))
        self._inherited = systemd.inherited_sockets()
        try:
            # The first poll and loads come before the ports open, as in TF Serving.
            await self._load_initial_config()
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        api = Api(
            self.manager,
            self._run_executor,
            inline_threshold_seconds=options.inline_run_threshold_micros / 1e6,
            reload_config=self.core.reload_from_message,
        )
        api.request_log = self.request_log
        if grpc_import is not None:
            await self._start_grpc(await grpc_import, api)
        if options.rest_api_port:
            rest = self._rest = RestApi(
                api,
                limits=Limits(
                    max_request_bytes=options.rest_api_max_request_bytes,
                    max_header_bytes=options.rest_api_max_header_bytes,
                    request_timeout=options.rest_api_header_timeout_in_ms / 1000,
                    idle_timeout=options.rest_api_idle_timeout_in_ms / 1000,
                    max_connections=options.rest_api_max_connections,
                ),
                enable_cors=options.rest_api_enable_cors_support,
                run_timeout_ms=options.rest_api_timeout_in_ms,
                metrics_path=metrics_path,
                pending=self._pending,
                status_page=status_page,
                readiness=self._readiness,
            )
            inherited = systemd.pick(self._inherited, port=options.rest_api_port)
            where = {"sock": inherited} if inherited else {
                "host": options.bind_address, "port": options.rest_api_port, "reuse_address": True}
            listener = await loop.create_server(
                lambda: HttpProtocol(rest, self._connections), backlog=1024, **where
            )
            self._listeners.append(listener)
            self._tasks.append(loop.create_task(self._sweep()))
            log.info("Exporting HTTP/REST API at:%s:%d ...", options.bind_address, options.rest_api_port)
            if metrics_path:
                log.info("Prometheus metrics at http://%s:%d%s", options.bind_address, options.rest_api_port,
                         metrics_path)
            if status_page is not None:
                log.info("Status page at http://%s:%d/", options.bind_address, options.rest_api_port)
        elif metrics_path:
            log.warning("--monitoring_config_file enables Prometheus, but its page needs --rest_api_port")
        self.core.start_polling(options.model_config_file_poll_wait_seconds)
        for sock in self._inherited:  # handed over, but no flag asks for it
            log.warning("Ignoring inherited socket %s: no port or socket path flag names it", sock.getsockname())
            sock.close()
        self._inherited = []
        # systemd: ready once the ports listen and the models present at start loaded.
        self._notifier.ready(systemd.status_line(self.manager))
        self.manager.add_listener(self._status_changed)
        if self._notifier.watchdog_seconds:
            self._tasks.append(loop.create_task(self._watchdog(self._notifier.watchdog_seconds)))

    def _readiness(self) -> str | None:
        """GET /readyz: None once every configured model has an AVAILABLE version."""
        if self._draining:
            return "Not ready: the server is shutting down"
        missing = [name for name in self.core.model_names() if not self.manager.is_available(name)]
        if missing:
            return "Not ready: no AVAILABLE version yet for model(s) " + ", ".join(missing)
        return None

    def _admission(self) -> metrics.Admission:
        rest = self._rest
        return metrics.Admission(
            rest_connections=len(self._connections),
            rest_refused=rest.refused_connections if rest is not None else 0,
            grpc_connections=self._grpc_open.count,
            grpc_refused=self._grpc_open.refused,
            pending=self._pending.count,
            pending_refused=self._pending.refused,
        )

    def _status_changed(self, _name: str) -> None:
        """A model's versions changed: systemd's STATUS= follows, at most twice a second."""
        if self._status_pending or not self._notifier.enabled:
            return
        self._status_pending = True

        def send() -> None:
            self._status_pending = False
            self._notifier.status(systemd.status_line(self.manager))

        asyncio.get_running_loop().call_later(0.5, send)

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the event loop itself: a blocked loop misses it and systemd
        restarts the process."""
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(interval)

    async def _start_grpc(self, grpc_api: Any, api: Api) -> None:
        """Both gRPC services (+ health, reflection) on --port and/or --grpc_socket_path."""
        from grpclib.reflection.service import ServerReflection

        from .messages import REFLECTION_POOL  # TF Serving's files + the default pool's

        options = self.options
        try:
            limits = grpc_api.parse_channel_arguments(
                options.grpc_channel_arguments,
                tensor_content=options.enable_serialization_as_tensor_content,
            )
            ssl_context = None
            if options.ssl_config_file:
                from .tls import server_context

                ssl_context = server_context(options.ssl_config_file)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._grpc_calls = grpc_api.Calls(self._pending)
        services: list[Any] = [
            grpc_api.PredictionService(api, limits, self._grpc_calls),
            grpc_api.ModelService(api, limits, self._grpc_calls),
        ]
        if options.enable_grpc_healthcheck_service:
            from .grpc_health import ModelHealth

            self._health = ModelHealth(self.manager)
            services.append(self._health)
        services = ServerReflection.extend(services, pool=REFLECTION_POOL)
        if options.port:
            server = grpc_api.GrpcServer(services, self._grpc_open)
            inherited = systemd.pick(self._inherited, port=options.port)
            where = {"sock": inherited} if inherited else {
                "host": options.bind_address, "port": options.port, "reuse_address": True}
            await server.start(ssl=ssl_context, backlog=1024, **where)
            self._grpc_servers.append(server)
            log.info("Running gRPC ModelServer at %s:%d ...", options.bind_address, options.port)
        if options.grpc_socket_path:
            server = grpc_api.GrpcServer(services, self._grpc_open)
            inherited = systemd.pick(self._inherited, unix_path=options.grpc_socket_path)
            if inherited is not None:  # systemd's socket: it creates and removes the file
                await server.start(sock=inherited, ssl=ssl_context, backlog=1024)
            else:
                _remove_stale_socket(options.grpc_socket_path)
                await server.start(path=options.grpc_socket_path, ssl=ssl_context, backlog=1024)
                self._bound_socket_path = options.grpc_socket_path
            self._grpc_servers.append(server)
            log.info("Running gRPC ModelServer at UNIX socket %s ...", options.grpc_socket_path)

    def _busy(self) -> bool:
        if any(conn.busy for conn in self._connections):
            return True
        return self._grpc_calls is not None and self._grpc_calls.active > 0

    async def _load_initial_config(self) -> None:
        options = self.options
        file_text = None
        if options.model_config_file:
            file_text, config = await self.core.read_config_file()
            log.info("Loading model config file %s: %d model(s)", options.model_config_file, len(config.models))
        elif options.model_base_path:
            log.info(
                "Building single TensorFlow model file config: model_name: %s model_base_path: %s",
                options.model_name, options.model_base_path,
            )
            config = single_model(options.model_name, options.model_base_path)
        else:
            config = None  # --model_repository only
        await self.core.load_initial_config(config, file_text)

    def _on_sighup(self) -> None:
        if not self.options.model_config_file and not self.options.model_repository:
            log.warning("SIGHUP: there is no --model_config_file to re-read")
            return
        log.info("SIGHUP: re-reading the model config")
        task = asyncio.get_running_loop().create_task(self._reload_on_signal())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)  # one per SIGHUP: do not keep them

    async def _reload_on_signal(self) -> None:
        self._notifier.reloading()
        refusal = await self.core.reload_on_signal()
        status = systemd.status_line(self.manager)
        if refusal:
            status = f"config reload refused, the previous config stays: {refusal}; {status}"
        self._notifier.ready(status)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for conn in list(self._connections):
                conn.check_timeouts(now)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested is not None and not self._stop_requested.is_set():
            log.info("Received %s: draining (grace period %.1fs)", sig.name,
                     self.options.shutdown_grace_period_seconds)
            self._stop_requested.set()

    async def wait_for_stop(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()

    async def stop(self) -> None:
        started = time.monotonic()
        self._draining = True
        grace = self.options.shutdown_grace_period_seconds
        self._notifier.stopping()
        for listener in self._listeners:
            listener.close()
        if self._health is not None:
            self._health.set_serving(False)
        for grpc_server in self._grpc_servers:
            # Stop accepting connections only: grpclib's own close() would cancel the
            # calls in flight, which are answered first.
            grpc_server._server.close()
        if self._grpc_calls is not None:
            self._grpc_calls.draining = True
        for conn in list(self._connections):
            conn.drain()
        while self._busy() and time.monotonic() - started < grace:
            await asyncio.sleep(0.01)
        unanswered = sum(1 for conn in self._connections if conn.busy)
        if self._grpc_calls is not None:
            unanswered += self._grpc_calls.active
        if unanswered:
            log.warning("Grace period over with %d request(s) still waiting for answers", unanswered)
        for grpc_server in self._grpc_servers:
            grpc_server.close()
            try:
                await asyncio.wait_for(grpc_server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                log.warning("gRPC connections did not close in time")
        if self._bound_socket_path is not None:
            try:
                os.unlink(self._bound_socket_path)
            except OSError:
                pass
        for task in self._tasks:
            task.cancel()
        if self.core is not None:
            await self.core.stop()
        if self.manager is not None:
            remaining = max(0.1, grace - (time.monotonic() - started))
            try:
                await asyncio.wait_for(self.manager.stop(), remaining + 5)
            except asyncio.TimeoutError:
                log.warning("Unloading did not finish in time; exiting anyway")
        for conn in list(self._connections):
            conn.drain()
        # The requests answered are in the log files: what was queued is written.
        await asyncio.get_running_loop().run_in_executor(None, self.request_log.stop)
        for executor in (self._load_executor, self._unload_executor, self._run_executor):
            executor.shutdown(wait=False, cancel_futures=True)
        log.info("Stopped after %.2fs", time.monotonic() - started)


def _batching_options(options: Options) -> BatchOptions | None:
    """--enable_batching's server-wide parameters (TF Serving's server.cc: the file's,
    or the scheduler's defaults); the batching files are ignored without it."""
    if not options.enable_batching:
        if options.batching_parameters_file or options.enable_per_model_batching_parameters:
            log.warning("--batching_parameters_file and --enable_per_model_batching_parameters "
                        "are ignored without --enable_batching")
        return None
    try:
        if options.batching_parameters_file:
            parameters = batch_options.read_file(options.batching_parameters_file)
        else:
            parameters = batch_options.parse("", "the default batching parameters")
    except ServingError as exc:
        raise StartupError(exc.message) from None
    return dataclasses.replace(parameters, adaptive=options.adaptive_batching)


def _metrics_path(options: Options) -> str | None:
    """Where the REST port serves Prometheus's page (--monitoring_config_file), or None."""
    if not options.monitoring_config_file:
        return None
    try:
        return metrics.read_config(options.monitoring_config_file)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def _status_page(options: Options, metrics_path: str | None) -> tuple[str | None, StatusPage | None]:
    """--enable_status_page: the page for `/` and the metrics path it reads, which is
    served (and recorded) even without --monitoring_config_file: at TF Serving's default."""
    if not options.enable_status_page or not options.rest_api_port:
        return metrics_path, None
    if metrics_path == "/":
        log.warning("--monitoring_config_file serves the metrics at /: no status page")
        return metrics_path, None
    metrics_path = metrics_path or metrics.DEFAULT_PATH
    try:
        return metrics_path, StatusPage(metrics_path)
    except (OSError, ValueError) as exc:
        raise StartupError(f"Cannot read the status page: {exc}") from None


class _Refused:
    """A loader whose load fails with a known status (a SavedModel in a lite install)."""

    def __init__(self, error: ServingError) -> None:
        self.error = error

    def load(self) -> Any:
        raise self.error


class StartupError(Exception):
    """A configuration the server cannot start with; the message says why."""


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a killed server would block the bind; one that still
    answers belongs to a running server and is left alone."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise StartupError(f"--grpc_socket_path {path} exists and is not a socket")
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            log.info("Removed stale socket file %s", path)
            return
        except OSError:
            return
    raise StartupError(f"--grpc_socket_path {path} is in use by another running server")


async def serve(options: Options) -> int:
    server = Server(options)
    try:
        await server.start()
    except StartupError as exc:
        log.error("Failed to start server. Error: %s", exc)
        await server.stop()
        return 1
    await server.wait_for_stop()
    await server.stop()
    return 0


def run(options: Options) -> int:
    if not options.model_base_path and not options.model_config_file and not options.model_repository:
        print(
            "edgeserve: Both server_options.model_base_path and server_options.model_config_file "
            "are empty! (give --model_base_path=/models/<name>, --model_config_file or "
            "--model_repository)",
            file=sys.stderr,
        )
        return 2
    if options.model_config_file and (
        options.model_base_path or "model_name" in options.given_flags
    ):
        print(
            "edgeserve: --model_config_file cannot be combined with --model_name/--model_base_path "
            "(the config file names the models)",
            file=sys.stderr,
        )
        return 2
    import uvloop

    try:
        return uvloop.run(serve(options))
    except OSError as exc:  # e.g. the port is taken
        log.error("Failed to start server. Error: %s", exc)
        return 1
