"""Builds the parts from Options and runs them on one uvloop event loop.

Start: sources poll, the manager loads what exists (as TF Serving does, ports open
once the first load attempts are done), then the REST port listens. Stop (SIGTERM,
SIGINT): stop accepting, answer what was received within the grace period, unload
every version, exit 0.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from .api import Api
from .cli import Options
from .manager import Manager
from .rest_api import HttpProtocol, Limits, RestApi
from .runtimes.savedmodel import SavedModelLoader
from .sources import AspiredVersion, FileSystemSource

log = logging.getLogger("edgeserve.server")

SWEEP_SECONDS = 0.5  # how often slow and idle connections are looked at


class Server:
    def __init__(self, options: Options) -> None:
        self.options = options
        self._stop_requested: asyncio.Event | None = None
        self._connections: set[HttpProtocol] = set()
        self._listeners: list[asyncio.AbstractServer] = []
        self._sources: list[FileSystemSource] = []
        self._tasks: list[asyncio.Task] = []
        cpus = len(os.sched_getaffinity(0))
        # num_load_threads=0 means loads run one at a time in TF Serving too; on a
        # small box that also keeps peak RAM down.
        self._load_executor = ThreadPoolExecutor(max(1, options.num_load_threads), "load")
        self._unload_executor = ThreadPoolExecutor(max(1, options.num_unload_threads), "unload")
        self._run_executor = ThreadPoolExecutor(max(1, cpus), "run")
        self.manager: Manager | None = None

    def _loader(self, name: str, aspired: AspiredVersion) -> SavedModelLoader:
        intra, inter = self.options.session_threads()
        return SavedModelLoader(
            aspired.path,
            tags=sorted(self.options.saved_model_tag_set()),
            intra_op_threads=intra,
            inter_op_threads=inter,
            run_timeout_ms=self.options.rest_api_timeout_in_ms,
        )

    async def start(self) -> None:
        options = self.options
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.manager = Manager(
            self._loader,
            load_executor=self._load_executor,
            unload_executor=self._unload_executor,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
        )
        log.info(
            "Building single TensorFlow model file config: model_name: %s model_base_path: %s",
            options.model_name, options.model_base_path,
        )
        source = FileSystemSource(
            options.model_name,
            options.model_base_path,
            self.manager.set_aspired_versions,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
        )
        self._sources.append(source)
        await source.poll_once()  # the first poll before ports open, as TF Serving
        await self.manager.wait_until_settled()
        if options.file_system_poll_wait_seconds > 0:
            source.poll_wait_seconds = options.file_system_poll_wait_seconds
            self._tasks.append(loop.create_task(self._poll_later(source)))
        api = Api(
            self.manager,
            self._run_executor,
            inline_threshold_seconds=options.inline_run_threshold_micros / 1e6,
        )
        if options.port:
            log.warning("gRPC API (--port=%d) is not served yet; only REST is.", options.port)
        if options.rest_api_port:
            rest = RestApi(
                api,
                limits=Limits(
                    max_request_bytes=options.rest_api_max_request_bytes,
                    max_header_bytes=options.rest_api_max_header_bytes,
                    request_timeout=options.rest_api_header_timeout_in_ms / 1000,
                    idle_timeout=options.rest_api_idle_timeout_in_ms / 1000,
                ),
                enable_cors=options.rest_api_enable_cors_support,
            )
            listener = await loop.create_server(
                lambda: HttpProtocol(rest, self._connections),
                host=options.bind_address,
                port=options.rest_api_port,
                reuse_address=True,
                backlog=1024,
            )
            self._listeners.append(listener)
            self._tasks.append(loop.create_task(self._sweep()))
            log.info("Exporting HTTP/REST API at:%s:%d ...", options.bind_address, options.rest_api_port)
        else:
            log.warning("--rest_api_port is 0: the REST API is off and nothing else serves yet.")

    async def _poll_later(self, source: FileSystemSource) -> None:
        await asyncio.sleep(source.poll_wait_seconds)
        source.start()

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
        grace = self.options.shutdown_grace_period_seconds
        for listener in self._listeners:
            listener.close()
        for conn in list(self._connections):
            conn.drain()
        while any(conn.busy for conn in self._connections) and time.monotonic() - started < grace:
            await asyncio.sleep(0.01)
        unanswered = sum(1 for conn in self._connections if conn.busy)
        if unanswered:
            log.warning("Grace period over with %d connection(s) still waiting for answers", unanswered)
        for task in self._tasks:
            task.cancel()
        for source in self._sources:
            await source.stop()
        if self.manager is not None:
            remaining = max(0.1, grace - (time.monotonic() - started))
            try:
                await asyncio.wait_for(self.manager.stop(), remaining + 5)
            except asyncio.TimeoutError:
                log.warning("Unloading did not finish in time; exiting anyway")
        for conn in list(self._connections):
            conn.drain()
        for executor in (self._load_executor, self._unload_executor, self._run_executor):
            executor.shutdown(wait=False, cancel_futures=True)
        log.info("Stopped after %.2fs", time.monotonic() - started)


async def serve(options: Options) -> int:
    server = Server(options)
    await server.start()
    await server.wait_for_stop()
    await server.stop()
    return 0


def run(options: Options) -> int:
    if not options.model_base_path and not options.model_config_file:
        print(
            "edgeserve: Both server_options.model_base_path and server_options.model_config_file "
            "are empty! (give --model_base_path=/models/<name>)",
            file=sys.stderr,
        )
        return 2
    import uvloop

    try:
        return uvloop.run(serve(options))
    except OSError as exc:  # e.g. the port is taken
        log.error("Failed to start server. Error: %s", exc)
        return 1
