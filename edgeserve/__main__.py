"""`edgeserve` / `python -m edgeserve` / the zipapp: parse flags, set up logging, run."""
from __future__ import annotations

import logging
import os
import sys


def _versions() -> str:
    from importlib import metadata

    from . import __version__

    try:
        tf = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf = "not installed"
    return f"TensorFlow ModelServer: edgeserve-{__version__}\nTensorFlow Library: {tf}"


REQUIRED_PYTHON = (3, 11)


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < REQUIRED_PYTHON:  # before anything that would not import there
        print(
            "edgeserve needs Python %d.%d or newer; this is Python %d.%d (%s)"
            % (*REQUIRED_PYTHON, *sys.version_info[:2], sys.executable),
            file=sys.stderr,
        )
        return 2
    from . import cli

    options = cli.parse_args(sys.argv[1:] if argv is None else argv)
    if options.version:
        print(_versions())
        return 0
    logging.basicConfig(
        level=options.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # TensorFlow's C++ logging would otherwise print a warning for every refused
    # request; errors still show. A user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN's own allocator pools large buffers and never hands them back, so an
    # unloaded version's weights stayed resident (bench/swap: +100 MiB after a swap
    # of a 100 MiB model). With the system allocator they go back to the OS with
    # the session, which is what a small box needs. A user's own setting wins.
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    if options.log_level != "debug":
        # grpclib logs every cancelled or timed-out call at INFO: one line per stream
        # when a client disconnects. Its warnings and errors still show.
        logging.getLogger("grpclib").setLevel(logging.WARNING)
    log = logging.getLogger("edgeserve")
    for flag in options.ignored_flags:
        log.info("--%s is ignored: edgeserve runs on the CPU only", flag)
    if "rest_api_num_threads" in options.given_flags:
        log.info("--rest_api_num_threads is ignored: REST is served on one event loop")
    from .server import run

    return run(options)


if __name__ == "__main__":
    sys.exit(main())
