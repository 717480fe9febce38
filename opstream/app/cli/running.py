"""Running one client command: an ``AsyncClient`` under ``asyncio.run``, and every failure a
person can expect turned into one line and an exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from opstream.app.cli.output import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    describe_error,
    fail,
    silence_stdout,
)
from opstream.app.client import AsyncClient, ClientError


class UsageError(Exception):
    """Arguments that parse but make no sense (``--params`` that is not a JSON object)."""


def run_with_client(args: argparse.Namespace, body: Callable[[AsyncClient], Awaitable[int]]) -> int:
    """Run ``body`` with a client; turn every expected failure into a line and a status."""

    async def main() -> int:
        async with AsyncClient(args.url) as client:
            return await body(client)

    try:
        return asyncio.run(main())
    except ClientError as exc:
        return fail(describe_error(exc))
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
