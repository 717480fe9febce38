"""deploy/'s container, compose and systemd files, checked by what can run here.

No Docker or systemd on these machines: the files must parse, every opstream command in them
must be one opstream's own parser accepts with the settings the deployment needs (API
servers without handlers, workers with them), the image's health check must be a command
that really tells a live server from a dead one, and nginx must be given exactly the
variables its template names.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.nginx import TEMPLATE, VARIABLES, render
from opstream.app.cli.main import build_parser, settings_from
from opstream.app.http.inputs import MAX_WAIT
from opstream.app.runtime.settings import Settings
from opstream.app.runtime.tenants import Tenants
from tests.conftest import ServerProcess, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent


def opstream_settings(argv: list[str]) -> tuple[str, Settings]:
    """What ``opstream ARGV...`` would run with: its command and its settings."""
    assert argv[0] == "opstream", argv
    args = build_parser().parse_args(argv[1:])
    return args.command, settings_from(args)


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec form: {arguments}"
    return [str(part) for part in value]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_runs_two_api_servers_a_worker_postgres_and_nginx(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "api-1", "api-2", "worker", "nginx"}
    for name in ("api-1", "api-2"):
        command, settings = opstream_settings(services[name]["command"])
        # No handlers in the API servers, not even the demo kinds (docs/scale-out.md).
        assert command == "serve" and settings.concurrency == 0 and settings.no_demo
        assert settings.host == "0.0.0.0" and settings.port == 8000
        env = services[name]["environment"]
        assert env["OPSTREAM_DATABASE"].startswith("postgresql://")
        # Stream tokens one server issues must pass on the other: one shared secret.
        assert env["OPSTREAM_SECRET"] and "OPSTREAM_TOKENS_FILE" in env
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    command, settings = opstream_settings(services["worker"]["command"])
    assert command == "worker" and settings.concurrency > 0
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert services["postgres"]["image"].startswith("postgres:15")


def test_compose_nginx_renders_the_tested_template(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    mounts = [volume.split(":") for volume in nginx["volumes"]]
    assert [(DEPLOY / source).resolve() for source, *_ in mounts] == [TEMPLATE]
    assert mounts[0][1] == "/etc/nginx/templates/opstream.conf.template"
    env = nginx["environment"]
    given = {name: str(env[name]) for name in VARIABLES}
    # The image's envsubst replaces only what its filter lets through: all four, no more.
    passing = [name for name in env if re.search(env["NGINX_ENVSUBST_FILTER"], name)]
    assert sorted(passing) == sorted(VARIABLES)
    rendered = render(TEMPLATE.read_text(), given)
    for upstream in (given["OPSTREAM_API_1"], given["OPSTREAM_API_2"]):
        service, port = upstream.split(":")
        _, settings = opstream_settings(compose["services"][service]["command"])
        assert int(port) == settings.port
        assert f"server {upstream} " in rendered


def test_render_is_what_envsubst_does() -> None:
    envsubst = subprocess.run(["which", "envsubst"], capture_output=True, text=True).stdout
    if not envsubst.strip():
        pytest.skip("envsubst (gettext-base) is not installed: nothing to compare with")
    values = {name: f"value-of-{name.lower()}" for name in VARIABLES}
    shell_format = " ".join(f"${{{name}}}" for name in VARIABLES)
    done = subprocess.run(
        ["envsubst", shell_format],
        input=TEMPLATE.read_text(),
        capture_output=True,
        text=True,
        env=values,
        check=True,
    )
    assert render(TEMPLATE.read_text(), values) == done.stdout


def test_image_runs_serve_as_a_user_that_is_not_root() -> None:
    instructions = dockerfile()
    user = [args for name, args in instructions if name == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    cmd = exec_form(next(args for name, args in instructions if name == "CMD"))
    command, settings = opstream_settings(cmd)
    assert command == "serve"
    expose = [args for name, args in instructions if name == "EXPOSE"]
    assert expose == [str(settings.port)]
    for name, args in instructions:
        if name == "COPY":
            *sources, _ = args.split()
            assert all((REPO / source).exists() for source in sources), args


def test_image_health_check_tells_a_live_server_from_a_dead_one(tmp_path: Path) -> None:
    healthcheck = next(args for name, args in dockerfile() if name == "HEALTHCHECK")
    probe = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "/healthz" in probe[-1]
    server = ServerProcess(tmp_path / "opstream.db").start()
    try:
        live = [sys.executable, *probe[1:-1], probe[-1].replace(":8000/", f":{server.port}/")]
        assert subprocess.run(live, capture_output=True).returncode == 0
    finally:
        server.stop()
    dead = [sys.executable, *probe[1:-1], probe[-1].replace(":8000/", f":{free_port()}/")]
    assert subprocess.run(dead, capture_output=True).returncode != 0


@pytest.mark.parametrize("unit", ["opstream-api@.service", "opstream-worker.service"])
def test_systemd_units_run_opstream_as_its_own_user(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / unit)
    service = parser["Service"]
    assert service["User"] == "opstream" and service["KillSignal"] == "SIGTERM"
    argv = shlex.split(service["ExecStart"].replace("%i", "8001"))
    assert argv[0] == "/opt/opstream/bin/opstream"
    command, settings = opstream_settings(["opstream", *argv[1:]])
    if unit.startswith("opstream-api"):
        # Loopback only, behind nginx (whose template the unit's comment names).
        assert command == "serve" and settings.host == "127.0.0.1" and settings.port == 8001
        assert settings.concurrency == 0 and settings.no_demo
    else:
        assert command == "worker" and settings.concurrency > 0
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_the_example_tokens_file_loads() -> None:
    tenants = Tenants.load(path=str(DEPLOY / "tokens.example.json"))
    assert not tenants.open


def fenced(path: Path, language: str) -> list[str]:
    """The ``language`` code blocks of a Markdown file."""
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.DOTALL)


def test_the_docs_show_the_tested_nginx_file() -> None:
    template = TEMPLATE.read_text()
    assert fenced(REPO / "docs" / "scale-out.md", "nginx") == [template]
    # The README shows a part of it, re-indented: the same lines, in the same order.
    template_lines = [line.strip() for line in template.splitlines()]
    for block in fenced(REPO / "README.md", "nginx"):
        lines = [line.strip() for line in block.splitlines()]
        starts = [i for i, line in enumerate(template_lines) if line == lines[0]]
        assert any(template_lines[i : i + len(lines)] == lines for i in starts), block
    # The render command the docs give names exactly the template's variables.
    shell = "\n".join(fenced(REPO / "docs" / "scale-out.md", "sh"))
    command = re.search(r"envsubst '([^']*)'", shell)
    assert command is not None
    assert re.findall(r"\$\{(\w+)\}", command.group(1)) == list(VARIABLES)


def seconds(directive: str) -> float:
    """The shortest value ``directive`` has anywhere in the template (both caches set it)."""
    found = re.findall(rf"^\s*{directive} (\d+)s;", TEMPLATE.read_text(), re.MULTILINE)
    assert found, directive
    return min(float(value) for value in found)


def test_nginx_waits_longer_than_any_long_poll_or_heartbeat() -> None:
    # A long-poll (?wait=) may be held MAX_WAIT seconds, an idle stream a heartbeat: the
    # proxy must not give up on either, nor release cache-lock waiters before it ends.
    # A Durable Stream long-poll (OPSTREAM_LONG_POLL_SECONDS) is bounded by the same.
    defaults = Settings()
    longest = max(MAX_WAIT, defaults.heartbeat_seconds, defaults.long_poll_seconds)
    assert seconds("proxy_read_timeout") > longest
    assert seconds("proxy_cache_lock_timeout") > longest
    assert seconds("proxy_cache_lock_age") > longest
