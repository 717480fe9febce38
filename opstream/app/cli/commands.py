"""What ``submit``, ``events``, ``ls``, ``status``, ``cancel`` and ``result`` do once their
arguments are parsed: ask the server, print what it answered, return an exit status.

``watch``, which lives on until the operation ends, has its own module (``watching``);
``submit --watch`` hands over to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from opstream.app.cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    fail,
    is_tty,
    operation_json_line,
    operations_table,
    print_line,
    say,
)
from opstream.app.cli.running import UsageError, run_with_client
from opstream.app.cli.watching import cmd_watch
from opstream.app.client import AlreadyFinished, AsyncClient, Result
from opstream.app.client.models import event_to_json_line


def parse_params(params: str | None, pairs: list[str]) -> dict[str, Any]:
    """``--params`` (a JSON object, ``@FILE`` or ``@-``) overlaid with ``--param k=v``."""
    merged: dict[str, Any] = {} if params is None else _params_object(params)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param expects KEY=VALUE, not {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        merged[key.strip()] = value
    return merged


def _params_object(params: str) -> dict[str, Any]:
    text = params
    if params.startswith("@"):
        source = params[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"--params: cannot read {source}: {exc.strerror}") from exc
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise UsageError("--params must be a JSON object, like '{\"steps\": 5}'")
    return loaded


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        params = parse_params(args.params, args.param)
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)

    async def body(client: AsyncClient) -> int:
        operation = await client.submit(args.kind, params, args.idempotency_key)
        args.id = operation.id
        if args.watch:
            if is_tty() and not args.json:
                say(f"submitted {operation.id} ({operation.kind})")
        elif args.json:
            print_line(operation_json_line(operation))
        elif is_tty():
            print_line(f"{operation.id}  {operation.status}  {operation.kind}")
            say(f"follow it with: opstream watch {operation.id}")
        else:
            print_line(operation.id)
        return EXIT_OK

    status = run_with_client(args, body)
    if status != EXIT_OK or not args.watch:
        return status
    return cmd_watch(args)


def cmd_events(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        if not args.follow:
            await client.get(args.id)  # an unknown id is an error, not an empty history
        events = (
            client.watch(args.id, after=args.after)
            if args.follow
            else client.events(args.id, after=args.after)
        )
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                print_line(event_to_json_line(event))
        return EXIT_OK

    return run_with_client(args, body)


def cmd_ls(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        operations = await client.list(status=args.status, kind=args.kind, limit=args.limit)
        if args.json or not is_tty():
            for operation in operations:
                print_line(operation_json_line(operation))
        else:
            Console(highlight=False).print(operations_table(operations))
        return EXIT_OK

    return run_with_client(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        operation = await client.get(args.id)
        indent = 2 if is_tty() else None
        print_line(json.dumps(operation.data, indent=indent, ensure_ascii=False))
        return EXIT_OK

    return run_with_client(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        try:
            operation = await client.cancel(args.id)
        except AlreadyFinished as exc:
            return fail(f"operation {args.id} already {exc.operation.status}; nothing to cancel")
        if operation.status == "cancelled":
            say(f"{operation.id} cancelled")
        else:
            say(f"{operation.id}: cancellation requested ({operation.status})")
        return EXIT_OK

    return run_with_client(args, body)


def cmd_result(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        result = await client.result(args.id)
        if args.output and args.output != "-":
            return await _save_result(result, Path(args.output))
        return _print_result(result)

    return run_with_client(args, body)


async def _save_result(result: Result, path: Path) -> int:
    try:
        await asyncio.to_thread(path.write_bytes, result.content)
    except OSError as exc:
        return fail(f"cannot write {path}: {exc.strerror}")
    say(f"wrote {len(result.content)} bytes ({result.content_type}) to {path}")
    return EXIT_OK


def _print_result(result: Result) -> int:
    # A binary result would garble the terminal; through a pipe the bytes are what is wanted.
    if is_tty() and not _is_textual(result.content_type):
        return fail(
            f"the result is {result.content_type} ({len(result.content)} bytes); "
            "use -o FILE to save it"
        )
    sys.stdout.buffer.write(result.content)
    if is_tty() and not result.content.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()
    return EXIT_OK


def _is_textual(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return (
        media.startswith("text/")
        or media in ("application/json", "application/xml", "application/x-ndjson")
        or media.endswith(("+json", "+xml"))
    )
