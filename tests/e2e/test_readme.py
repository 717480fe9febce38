"""The README's curl walkthrough, run line by line against a real server, so it cannot rot.

Each command in the walkthrough's ``bash`` blocks is run as written (with the server's port
in place of 8000); a trailing ``# → 202`` asserts the HTTP status, any other ``# → text``
asserts that the output contains the text. ``ID=…`` lines take the id of the operation the
previous POST created.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

from ..requirements import program

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Walkthrough with curl"
COMMAND_TIMEOUT = 60


def walkthrough_commands() -> list[tuple[str, str | None]]:
    text = README.read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if not line.strip():
                continue
            command, _, expectation = line.partition("# →")
            commands.append((command.strip(), expectation.strip() or None))
    return commands


def test_the_walkthrough_has_the_promised_steps() -> None:
    commands = " ".join(command for command, _ in walkthrough_commands())
    for step in (
        "-X POST",
        "events/stream",
        "Last-Event-ID",
        "events?after=",
        "-X DELETE",
        "If-None-Match",
        "curl -L",
        "/kinds",
        "/events?",
        "openapi.json",
    ):
        assert step in commands


@pytest.mark.e2e
def test_readme_walkthrough(server: ServerProcess) -> None:
    program("curl", "curl")  # skips, or fails under CI, without it
    env = dict(os.environ)
    location = None
    for command, expectation in walkthrough_commands():
        if command.startswith("ID="):
            assert location, f"no operation was created before {command!r}"
            env["ID"] = location.rsplit("/", 1)[1]
            continue
        runnable = command.replace("localhost:8000", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            ["bash", "-c", runnable],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        output = done.stdout
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        found = re.search(r"^location: (\S+)", output, re.I | re.M)
        if found and "-X POST" in command:
            location = found.group(1)
        if expectation is None:
            continue
        if expectation.isdigit():
            assert re.search(rf"^HTTP/1.1 {expectation} ", output, re.M), f"{command}\n{output}"
        else:
            assert expectation in output, f"{command}\n{output[:3000]}"
