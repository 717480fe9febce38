"""``opstream worker --url``: the worker command's HTTP mode (no database access)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from opstream.app.runtime.settings import Settings
from opstream.events.errors import OpstreamError

log = logging.getLogger("opstream")

URL_ENV = "OPSTREAM_WORKER_URL"
TOKEN_ENV = "OPSTREAM_WORKER_TOKEN"
NAME_ENV = "OPSTREAM_WORKER_NAME"


def add_remote_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or None,
        metavar="URL",
        help="run over the HTTP worker protocol against this opstream server instead of "
        f"the database (env {URL_ENV})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV, ""),
        help=f"a worker-role bearer token, with --url (env {TOKEN_ENV})",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get(NAME_ENV, ""),
        help=f"this worker's name, as servers log it (env {NAME_ENV}; default host-python)",
    )


def run_remote_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run Python handlers over HTTP until SIGTERM/SIGINT (0), or until the server refuses
    the credentials (1)."""
    from opstream.app.runtime.engine import load_registry
    from opstream.app.runtime.remote_worker import RemoteWorker, WorkerRefused

    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry lease ids
    registry = load_registry(settings)
    worker = RemoteWorker(
        args.url,
        registry,
        token=args.token,
        concurrency=settings.concurrency,
        lease_seconds=settings.lease_seconds,
        name=args.name,
    )

    async def main() -> None:
        task = asyncio.create_task(worker.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("worker %s stopped; running operations handed back", worker.name)

    try:
        asyncio.run(main())
    except WorkerRefused as exc:
        print(f"opstream: {args.url} refuses this worker: {exc}", file=sys.stderr)
        return 1
    except OpstreamError as exc:  # a failure it cannot recover from, said in one line
        print(f"opstream: {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0
