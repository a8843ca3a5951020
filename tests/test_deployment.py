"""The Procfile and docker-compose.yml run commands the project really has.

docker compose cannot run on the test machines, so its file is parsed: every service's
command is resolved against the real entry points (the ``webhooks`` click commands,
gunicorn's own option parser and app import, Celery's click commands on our app), and
every variable it sets must be one the settings (``shared/config.py``) read. The
Procfile gets the same checks and is then started for real with honcho.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from honcho.environ import parse_procfile

from shared.config import ConfigError, default_worker_processes, load_settings
from tests.conftest import ADMIN_TOKEN, ENCRYPTION_KEY
from tests.support.live_server import shared_live_server
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROCFILE = parse_procfile((ROOT / "Procfile").read_text()).processes
APP_SERVICES = ("migrate", "api", "worker", "beat")
# docs/api.md §9: the configuration every deployment must be able to pass.
DOCUMENTED_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "WEBHOOKS_ADMIN_TOKEN",
    "WEBHOOKS_JWT_SECRET",
    "WEBHOOKS_ENCRYPTION_KEY",
    "WEBHOOKS_RETRY_SCHEDULE",
    "WEBHOOKS_ALLOW_PRIVATE_TARGETS",
    "WEBHOOKS_PRECONFIGURED_BASE_URL",
    "WEBHOOKS_MAX_PAYLOAD_BYTES",
    "WEBHOOKS_DISABLE_AFTER_HOURS",
    "WEBHOOKS_RETENTION_DAYS",
    "WEBHOOKS_INIT_MAX_RETRIES",
}
# Gunicorn worker classes that keep a websocket open (the live socket, docs/api.md §7).
WEBSOCKET_WORKERS = {"gthread", "gevent", "eventlet", "geventwebsocket.gunicorn.workers"}
_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?]([^}]*))?\}")


def config_variables() -> set[str]:
    """The environment variables the settings read (string literals of shared/config.py and
    of shared/config_checks.py, which checks single values)."""
    return {
        node.value
        for module in ("config.py", "config_checks.py")
        for node in ast.walk(ast.parse((ROOT / "shared" / module).read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"(WEBHOOKS|DATABASE|REDIS|CELERY)_[A-Z_]+", node.value)
    }


def expand(text: str, env: dict[str, str]) -> str:
    """``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` as a shell or compose would."""

    def _one(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name, "")
        return value if value else (default if default and "?" not in match.group(0) else "")

    return _VARIABLE.sub(_one, text)


def compose_environment(given: dict[str, str]) -> dict[str, str]:
    """The app services' environment as compose resolves it from the operator's ``given``."""
    raw = COMPOSE["x-webhooks-env"]
    return {key: expand(str(value), given) for key, value in raw.items()}


def split_commands(command: str | list[str]) -> list[list[str]]:
    """A service or Procfile command as the argv of each program it runs."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        return split_commands(argv[2])
    commands, current = [], []
    for token in argv:
        if token == "&&":
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [_without_wrappers(c) for c in commands]


def _without_wrappers(argv: list[str]) -> list[str]:
    """The program a command runs, past `exec` and `nice [-n N]`."""
    if argv[:1] == ["exec"]:
        return _without_wrappers(argv[1:])
    if argv[:1] == ["nice"]:
        rest = argv[1:]
        return _without_wrappers(rest[2:] if rest[:1] == ["-n"] else rest)
    return argv


def check_program(argv: list[str]) -> str:
    """Resolve one program's argv against the project's real entry points; its kind."""
    program, args = argv[0], argv[1:]
    if program == "webhooks":
        import click

        from webhooks_api.cli import cli

        command: click.Command = cli
        ctx = click.Context(cli, info_name="webhooks")
        while isinstance(command, click.Group):
            assert args, f"`{' '.join(argv)}` names no command"
            sub = command.get_command(ctx, args[0])
            assert sub is not None, f"`webhooks ... {args[0]}` is not a command"
            ctx = click.Context(sub, info_name=args[0], parent=ctx)
            command, args = sub, args[1:]
        # Parses the options as the command would (NoSuchOption, BadParameter otherwise).
        command.make_context(ctx.info_name, list(args), parent=ctx.parent)
        return "webhooks"
    if program == "gunicorn":
        from gunicorn.config import Config

        parser = Config().parser()
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                options = parser.parse_args(args)
            except SystemExit:
                pytest.fail(f"gunicorn refuses `{' '.join(argv)}`: {err.getvalue()[-300:]}")
        assert options.worker_class in WEBSOCKET_WORKERS, options.worker_class
        module, _, attribute = options.args[0].partition(":")
        from flask import Flask

        assert isinstance(getattr(__import__(module, fromlist=["_"]), attribute), Flask)
        return "gunicorn"
    if program == "celery":
        from celery import Celery
        from celery.bin.base import CLIContext
        from celery.bin.celery import celery as celery_cli

        assert args[0] == "-A", "celery commands name their app with -A"
        module = __import__(args[1], fromlist=["app"])
        assert isinstance(module.app, Celery)
        ctx = celery_cli.make_context("celery", args[:3])
        sub = celery_cli.get_command(ctx, args[2])
        assert sub is not None, f"`celery {args[2]}` is not a command"
        obj = CLIContext(app=module.app, no_color=True, workdir=None, quiet=True)
        sub.make_context(args[2], list(args[3:]), parent=ctx, obj=obj)
        return f"celery {args[2]}"
    pytest.fail(f"unknown program in `{' '.join(argv)}`")


# ---- Procfile ------------------------------------------------------------------------------


def test_procfile_has_web_worker_and_beat_and_no_one_shot_process():
    # honcho stops every process as soon as one exits, so a one-shot line (release)
    # would take the whole stack down right after start.
    assert set(PROCFILE) == {"web", "worker", "beat"}


@pytest.mark.parametrize("name", ["web", "worker", "beat"])
def test_procfile_commands_are_real(name):
    env = {"PORT": "5000"}
    kinds = [check_program(argv) for argv in split_commands(expand(PROCFILE[name], env))]
    expected = {
        "web": ["webhooks", "gunicorn"],  # migrations first, then the api
        "worker": ["webhooks"],  # the supervisor of the delivery processes
        "beat": ["celery beat"],
    }
    assert kinds == expected[name]


def test_procfile_worker_is_the_supervisor_at_its_defaults_below_web():
    # Every core by default, and no tuning on the line: what ships is what is measured.
    assert split_commands(PROCFILE["worker"]) == [["webhooks", "worker"]]
    assert shlex.split(PROCFILE["worker"])[:4] == ["exec", "nice", "-n", "10"]


def test_procfile_variables_are_known_to_the_config():
    used = set(_VARIABLE.findall("\n".join(PROCFILE.values())))
    names = {name for name, _default in used} - {"PORT"}  # PORT is the platform's
    assert names <= config_variables()


# ---- docker-compose.yml --------------------------------------------------------------------


def test_compose_has_the_whole_stack_with_health_checks():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    for name in ("postgres", "redis", "api", "worker", "beat"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    assert "noeviction" in services["redis"]["command"]
    # Deliveries yield the CPU to the api's ingest, as the Procfile's nice does.
    assert services["worker"]["cpu_shares"] < services["api"].get("cpu_shares", 1024)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_commands_are_real(name):
    service = COMPOSE["services"][name]
    env = compose_environment({})
    command = service["command"]
    if isinstance(command, list):
        # `$$` is compose's escape for a `$` left to the container's shell.
        command = [part.replace("$$", "$") for part in command]
        if command[:2] == ["sh", "-c"]:
            command = ["sh", "-c", expand(command[2], env)]
    kinds = [check_program(argv) for argv in split_commands(command)]
    expected = {
        "migrate": ["webhooks"],
        "api": ["gunicorn"],
        "worker": ["webhooks"],
        "beat": ["celery beat"],
    }
    assert kinds == expected[name]


def test_compose_worker_health_check_is_a_real_celery_command():
    test = COMPOSE["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    argv = shlex.split(test[1].replace("$$HOSTNAME", "worker-host"))
    assert check_program(argv) == "celery inspect"


def test_compose_api_health_check_probes_readiness_without_credentials():
    # A load balancer's probe has no credentials: /readyz answers without them (docs/api.md §3).
    test = COMPOSE["services"]["api"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "/readyz" in test[3] and "Authorization" not in test[3]
    code = test[3].replace("http://127.0.0.1:8000", shared_live_server().url)
    env = {k: v for k, v in os.environ.items() if k != "WEBHOOKS_ADMIN_TOKEN"}
    ready = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert ready.returncode == 0, ready.stderr


def test_compose_passes_only_variables_the_config_knows_and_all_of_spec_9():
    variables = set(COMPOSE["x-webhooks-env"])
    assert variables >= DOCUMENTED_VARIABLES
    assert variables <= config_variables()
    for name in APP_SERVICES:
        assert COMPOSE["services"][name]["environment"] == COMPOSE["x-webhooks-env"]


def test_compose_environment_loads_as_valid_settings():
    given = {"WEBHOOKS_ADMIN_TOKEN": ADMIN_TOKEN, "WEBHOOKS_ENCRYPTION_KEY": ENCRYPTION_KEY}
    settings = load_settings(compose_environment(given))
    assert settings.database_url.startswith("postgresql+psycopg2://webhooks:webhooks@postgres:")
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.log_format == "json"
    assert not settings.embedded
    # The secrets are required: compose refuses to start without them (`:?`).
    assert "?" in COMPOSE["x-webhooks-env"]["WEBHOOKS_ADMIN_TOKEN"]
    assert "?" in COMPOSE["x-webhooks-env"]["WEBHOOKS_ENCRYPTION_KEY"]
    with pytest.raises(ConfigError, match="WEBHOOKS_RETENTION_DAYS"):
        load_settings(compose_environment({**given, "WEBHOOKS_RETENTION_DAYS": "forever"}))


def test_compose_image_is_built_from_this_project():
    app = COMPOSE["x-webhooks-app"]
    assert app["build"]["context"] == "."
    dockerfile = app["build"]["dockerfile_inline"]
    # The image installs the lockfile, hash-checked, and the project without resolving again.
    assert "pip install --require-hashes -r requirements.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for name in copied.split():
            assert (ROOT / name).exists(), name
    assert re.search(r"^USER (?!root)", dockerfile, re.M)


# ---- honcho start, for real ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own, so that only the honcho stack's worker takes its tasks."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=10)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def _subscribe_and_report(base: str, api_key: str, receiver, event_type: str, event: dict):
    """Through a running stack: a /v1 endpoint for ``event_type``, ``event`` reported; the post."""
    created = requests.post(
        f"{base}/v1/webhooks",
        json={"url": receiver.url + "/hooks", "event_types": [event_type]},
        headers={"X-API-Key": api_key},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    reported = requests.post(
        f"{base}/api/internal/events",
        json=event,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert reported.status_code == 202, reported.text
    return receiver.wait_for(1, timeout=30)[0]


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, with everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything a process left behind


def test_honcho_start_runs_web_worker_and_beat(tmp_path, private_redis, receiver):
    port = _free_port()
    # The Procfile's commands are this project's entry points, as installed next to the
    # Python running the tests (a `webhooks` of another installation may come first on
    # the PATH otherwise).
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "REDIS_URL": private_redis,
        "PORT": str(port),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    log_path = tmp_path / "honcho.log"
    with open(log_path, "wb") as log:
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped whole below
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready():
            assert honcho.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                ready = requests.get(f"{base}/readyz", timeout=2)
                return ready.status_code == 200
            return False

        wait_until(ready, timeout=60, interval=0.5)

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "webhooks_api.cli", *args],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        # One delivery process per core, each answering the ping.
        answering = f"workers   ok      {default_worker_processes()} answering"
        wait_until(lambda: answering in cli("check").stdout, timeout=30)
        org = json.loads(cli("org", "create", "Acme", "--json").stdout)
        event = {"event": "sandbox.state.updated", "organizationId": org["organizationId"],
                 "id": "sbx-42", "oldState": "paused", "newState": "started"}  # fmt: skip
        got = _subscribe_and_report(base, org["apiKey"], receiver, "sandbox.resumed", event)
        assert got.json()["type"] == "sandbox.resumed"

        def scraped_attempt():
            text = requests.get(f"{base}/metrics", timeout=10).text
            return 'webhooks_attempts_total{status_class="2xx",trigger="scheduled"} 1.0' in text

        wait_until(scraped_attempt, timeout=10)
        # Beat ticks (its heartbeat file, webhooks_worker.beat) without a line per job.
        started_at = time.time() - 1
        heartbeat = Path("/tmp/webhooks-celerybeat-schedule.heartbeat")
        wait_until(lambda: heartbeat.exists() and heartbeat.stat().st_mtime > started_at, 30)
    finally:
        _stop_group(honcho)
    output = log_path.read_text()
    assert "beat: Starting..." in output
    assert "Sending due task" not in output
    for name in ("web.1", "worker.1", "beat.1"):
        assert f"{name} started" in output
    assert "database schema is up to date" in output  # web migrated before serving


def test_webhooks_up_with_no_configuration_delivers_and_reports_every_part_healthy(
    tmp_path, receiver
):
    # The newcomer's path: no database, no Redis, only a data directory.
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env["WEBHOOKS_DATA_DIR"] = str(tmp_path / "data")
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "webhooks_api.cli", "up", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    platform = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    heartbeats = tmp_path / "data" / "workers"
    try:

        def healthy():
            assert up.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                status = requests.get(f"{base}/api/webhooks/status", headers=platform, timeout=5)
                return status.status_code == 200 and status
            return False

        status = wait_until(healthy, timeout=60, interval=0.5).json()
        assert status["status"] == "ok"
        assert status["database"]["ok"] and status["broker"] == {"ok": True}
        assert status["workers"] == {"ok": True, "count": 1}
        assert len(list(heartbeats.glob("*.alive"))) == 1

        org = requests.post(
            f"{base}/api/internal/organizations", json={"name": "Acme"}, headers=platform,
            timeout=10,
        ).json()  # fmt: skip
        event = {"event": "sandbox.created", "organizationId": org["organization"]["id"],
                 "id": "sbx-1", "state": "started"}  # fmt: skip
        got = _subscribe_and_report(base, org["apiKey"], receiver, "sandbox.created", event)
        assert got.json()["type"] == "sandbox.created"
    finally:
        _stop_group(up)
    # A worker that stopped is no longer counted.
    assert list(heartbeats.glob("*.alive")) == []
