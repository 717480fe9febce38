"""The ``opstream`` command: ``serve`` and ``worker`` here, the client commands beside."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from opstream import __version__
from opstream.app.cli.remote import add_remote_flags, run_remote_worker
from opstream.app.runtime import logs
from opstream.app.runtime.settings import (
    HELP,
    LOG_FORMATS,
    LOG_LEVELS,
    Settings,
    flag_of,
    variable_of,
)
from opstream.events.errors import OpstreamError

log = logging.getLogger("opstream")


def _server_flags(parser: argparse.ArgumentParser, *, http: bool) -> None:
    def flag(name: str, kind: type, **extra: object) -> None:
        env = variable_of(name)
        default = getattr(Settings(), name)
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        parser.add_argument(
            flag_of(name),
            type=kind,
            default=None,
            help=f"{HELP[name]} (env {env}; default {default})",
            **extra,  # type: ignore[arg-type]
        )

    if http:
        flag("host", str)
        flag("port", int)
    flag("database", str)
    parser.add_argument(
        "--handlers",
        nargs="+",
        default=None,
        metavar="MODULE",
        help=f"{HELP['handlers']} (env OPSTREAM_HANDLERS)",
    )
    parser.add_argument(
        "--no-demo",
        action="store_true",
        default=None,
        help=f"{HELP['no_demo']} (env OPSTREAM_NO_DEMO)",
    )
    flag("concurrency", int)
    flag("lease_seconds", float)
    flag("max_attempts", int)
    if http:
        flag("max_body_bytes", int)
        flag("heartbeat_seconds", float)
        flag("tokens_file", str)
        parser.add_argument(
            "--insecure",
            action="store_true",
            default=None,
            help=f"{HELP['insecure']} (env OPSTREAM_INSECURE)",
        )
        parser.add_argument(
            "--no-access-log",
            dest="access_log",
            action="store_false",
            default=None,
            help="write no access lines (by default each request is logged at info, "
            "stream tokens redacted) (env OPSTREAM_ACCESS_LOG=0)",
        )
        for ttl in ("result", "history", "tombstone", "idempotency"):
            flag(f"{ttl}_ttl_seconds", float)
        parser.add_argument(
            "--cors-origin",
            dest="cors_origins",
            action="append",
            default=None,
            metavar="ORIGIN",
            help=f"{HELP['cors_origins']}; repeat for several (env OPSTREAM_CORS_ORIGINS)",
        )
    flag("sqlite_synchronous", str, choices=["FULL", "NORMAL"])
    flag("log_level", str, choices=list(LOG_LEVELS))
    flag("log_format", str, choices=list(LOG_FORMATS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opstream",
        description="Long-running operations as event streams: 202, polling, replay, SSE.",
    )
    parser.add_argument("--version", action="version", version=f"opstream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the API, the dashboard and in-process workers",
        description="Run the HTTP API, the dashboard (at /) and in-process workers.",
        epilog=(
            "Secrets and limits are set only in the environment: OPSTREAM_TOKENS "
            "(tenant:token,...), OPSTREAM_SECRET, OPSTREAM_STREAM_TOKEN_SECONDS, "
            "OPSTREAM_WEBHOOK_SECRET, OPSTREAM_WEBHOOK_ALLOW, OPSTREAM_MAX_IN_FLIGHT, "
            "OPSTREAM_CREATE_RATE, OPSTREAM_POLL_RATE, OPSTREAM_MAX_STREAMS, "
            "OPSTREAM_SWEEP_SECONDS. See README.md, 'Configuration'."
        ),
    )
    _server_flags(serve, http=True)
    serve.set_defaults(func=run_serve)
    worker = commands.add_parser(
        "worker",
        help="run workers only, against the same database as a server",
        description="Run workers only: claim queued operations from the database and run them.",
    )
    _server_flags(worker, http=False)
    add_remote_flags(worker)
    worker.set_defaults(func=run_worker)
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the database schema, then exit",
        description="Create or upgrade the database schema (serve and worker also do this "
        "on start; run it first to keep schema changes out of a rolling restart).",
    )
    migrate.add_argument(
        "--database",
        default=None,
        help=f"{HELP['database']} (env OPSTREAM_DATABASE; default {Settings().database})",
    )
    migrate.set_defaults(func=run_migrate)
    try:
        from opstream.app.cli.client_commands import add_client_commands
    except ImportError:  # the client commands are optional in a trimmed install
        pass
    else:
        add_client_commands(commands)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    names = [
        "host", "port", "database", "concurrency", "lease_seconds", "max_attempts",
        "max_body_bytes", "heartbeat_seconds", "sqlite_synchronous", "log_level", "log_format",
        "access_log",
        "tokens_file", "insecure", "result_ttl_seconds", "history_ttl_seconds",
        "tombstone_ttl_seconds", "idempotency_ttl_seconds", "no_demo",
    ]  # fmt: skip
    overrides = {name: getattr(args, name, None) for name in names}
    if args.handlers:
        overrides["handlers"] = tuple(args.handlers)
    if getattr(args, "cors_origins", None):
        overrides["cors_origins"] = tuple(args.cors_origins)
    return _settings(**overrides)


def _settings(**overrides: Any) -> Settings:
    """The settings, or exit 2 saying which variable or flag has an unusable value."""
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"opstream: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from opstream.app.http.application import create_app
    from opstream.app.http.loopback_guard import is_loopback
    from opstream.app.http.serving import Server

    settings = settings_from(args)
    logs.configure(settings.log_level, settings.log_format)

    def stop_serving() -> None:  # a background task died: stop, and exit 1 below
        server.should_exit = True

    try:
        app = create_app(settings, on_failure=stop_serving)
    except (ValueError, ImportError, OSError) as exc:
        print(f"opstream: {exc}", file=sys.stderr)
        return 2
    open_access = not (settings.tokens or settings.tokens_file)
    if open_access and not is_loopback(settings.host):
        if not settings.insecure:
            print(
                f"opstream: refusing to serve {settings.host} without tokens: anyone could "
                "read and start operations. Configure OPSTREAM_TOKENS or --tokens-file, "
                "or pass --insecure if something in front of opstream authenticates.",
                file=sys.stderr,
            )
            return 2
        log.warning("serving %s with no authentication (--insecure)", settings.host)
    problem = database_problem(settings)
    if problem is not None:  # said here in one line: from the lifespan, with a traceback
        print(problem, file=sys.stderr)
        return 2
    log.info(  # a log record, so that --log-format json writes nothing but JSON lines
        "opstream %s: http://%s:%d/ (database %s)",
        __version__,
        settings.host,
        settings.port,
        redact_url(settings.database),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # logs.configure's handler takes uvicorn's records too
        timeout_graceful_shutdown=5,
        access_log=settings.access_log,  # at info, tokens redacted (logs.protect_access_log)
    )
    server = Server(config, send_timeout=2 * settings.heartbeat_seconds)
    server.run()
    if not server.started:
        return STARTUP_FAILURE
    return 1 if app.state.engine.failed else 0


def run_worker(args: argparse.Namespace) -> int:
    from opstream.app.runtime.engine import Engine

    settings = settings_from(args)
    logs.configure(settings.log_level, settings.log_format)
    if settings.concurrency < 1:  # 0 means "API only" to serve; a worker must run something
        print("opstream: error: worker: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if args.url:
        try:
            return run_remote_worker(args, settings)
        except (ValueError, ImportError) as exc:
            print(f"opstream: {exc}", file=sys.stderr)
            return 2

    async def main() -> bool:
        """Run until a signal (True) or a background task's failure (False)."""
        stop = asyncio.Event()
        engine = Engine(settings, retention=False, on_failure=stop.set)
        await engine.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        assert engine.worker is not None
        log.info(
            "worker %s on %s, kinds: %s",
            engine.worker.owner,
            redact_url(settings.database),
            engine.kinds.names(),
        )
        await stop.wait()
        await engine.stop()
        return engine.failed is None

    try:
        stopped_cleanly = asyncio.run(main())
    except (ValueError, ImportError) as exc:
        print(f"opstream: {exc}", file=sys.stderr)
        return 2
    except OpstreamError as exc:
        print(f"opstream: {redact_url(settings.database)}: {exc}", file=sys.stderr)
        return 2
    return 0 if stopped_cleanly else 1


def run_migrate(args: argparse.Namespace) -> int:
    settings = _settings(database=args.database)
    try:
        done = asyncio.run(_open_once(settings))
    except (ValueError, ImportError, OpstreamError) as exc:
        print(f"opstream: {exc}", file=sys.stderr)
        return 1
    print(f"opstream: the database is up to date{done}", file=sys.stderr)
    return 0


def database_problem(settings: Settings) -> str | None:
    """Why the database cannot be opened (and brought up to date), as one line; ``None``
    when it can."""
    try:
        asyncio.run(_open_once(settings))
    except (ValueError, OpstreamError) as exc:
        return f"opstream: {redact_url(settings.database)}: {exc}"
    return None


async def _open_once(settings: Settings) -> str:
    """Open the store (which migrates it) and close it: its schema version, if it has one."""
    from opstream.app.runtime.engine import open_store

    store = open_store(settings)
    await store.open()
    try:
        version = getattr(store, "schema_version", None)
        return "" if version is None else f" (schema version {await version()})"
    finally:
        await store.close()


def redact_url(url: str) -> str:
    """A database URL fit for logs: the password replaced."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
