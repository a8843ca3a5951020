"""The README's walk-through, run as printed against ``webhooks up`` on the embedded default.

The README marks each shell block of the walk-through with an HTML comment:
``<!-- walkthrough: background -->`` before a block whose command keeps running (the
service, the receiver) and ``<!-- walkthrough: run -->`` before the steps a reader types
in order in one shell. The test starts the background commands (skipping the virtualenv
and ``pip install`` steps, which the test run has done already) in a fresh directory with
no configuration, runs the steps in one bash with ``set -euo pipefail`` and every ``curl``
failing on an HTTP error, and checks the receiver got the delivery the README describes.
Only the ports change, so that the test never collides with a service on 8000 or 9000.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- walkthrough: (background|run) -->\s*\n```sh\n(.*?)\n```", re.S)
# Steps of installing, which the test environment has already taken.
INSTALL_STEPS = ("python3 -m venv", ". .venv/bin/activate", "source .venv/", "pip install")
API_ADDRESS, RECEIVER_ADDRESS = "127.0.0.1:8000", "127.0.0.1:9000"
# What a strict reader's shell does: stop at the first failing command, and count an HTTP
# error answer as a failure (curl alone exits 0 on a 4xx or 5xx).
PRELUDE = """\
set -euo pipefail
curl() { command curl --fail-with-body --max-time 30 "$@"; }
wait_for_delivery() {
  for _ in $(seq 1 $(( ${DELIVERY_WAIT_SECONDS:-30} * 5 ))); do
    grep -q 'evt-' "$LISTEN_LOG" && return 0
    sleep 0.2
  done
  echo "the receiver printed no delivery within ${DELIVERY_WAIT_SECONDS:-30} s" >&2
  return 1
}
"""


def walkthrough_blocks(text: str) -> list[tuple[str, str]]:
    """The marked shell blocks of the README, in order, as (kind, commands)."""
    return [(kind, body) for kind, body in BLOCK.findall(text)]


def background_commands(body: str) -> list[str]:
    """The long-running commands of a background block, without the install steps."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        kept = [
            part.strip()
            for part in line.split("&&")
            if part.strip() and not part.strip().startswith(INSTALL_STEPS)
        ]
        if kept:
            commands.append(" && ".join(kept))
    return commands


def localize(text: str, api_port: int, receiver_port: int) -> str:
    """The README's commands with the test's ports instead of 8000 and 9000."""
    text = text.replace(API_ADDRESS, f"127.0.0.1:{api_port}")
    text = text.replace(RECEIVER_ADDRESS, f"127.0.0.1:{receiver_port}")
    text = text.replace("--port 9000", f"--port {receiver_port}")
    return re.sub(r"\bwebhooks up\b", f"webhooks up --port {api_port}", text)


def steps_script(blocks: list[str]) -> str:
    """One bash script of the steps; after the step that reports an event, wait for it."""
    parts = [PRELUDE]
    for number, body in enumerate(blocks, 1):
        parts.append(f"echo '--- step {number}' >&2\n{body}\n")
        if "/api/internal/events" in body:
            parts.append("echo\nwait_for_delivery\n")
    return "\n".join(parts)


def newcomer_env(tmp_path: Path) -> dict[str, str]:
    """A shell with the project installed and nothing configured, as in the README."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WEBHOOKS_", "DATABASE_", "REDIS_", "CELERY_", "TEST_"))
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"  # the receiver's lines reach its log as they are printed
    env["LISTEN_LOG"] = str(tmp_path / "listen.log")
    return env


def run_steps(script: str, cwd: Path, env: dict[str, str], timeout: float = 60):
    """Run the steps in one bash, as a reader types them into one terminal."""
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, with everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def started(command: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A background command of the walk-through, in its own process group."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def test_the_readme_marks_the_service_the_receiver_and_the_steps():
    blocks = walkthrough_blocks(README.read_text())
    background = [
        c for kind, body in blocks if kind == "background" for c in background_commands(body)
    ]
    steps = [body for kind, body in blocks if kind == "run"]
    assert any(re.search(r"\bwebhooks up\b", c) for c in background), background
    assert any("webhooks listen" in c for c in background), background
    assert not any(c.startswith(INSTALL_STEPS) for c in background)
    assert any("/api/internal/events" in s for s in steps)
    # The ports the test replaces are the ones the README uses.
    assert API_ADDRESS in "\n".join(steps) and RECEIVER_ADDRESS in "\n".join(steps)


def test_the_readme_walkthrough_delivers_the_reported_event_to_the_listener(tmp_path):
    blocks = walkthrough_blocks(README.read_text())
    api_port, receiver_port = free_port(), free_port()
    env = newcomer_env(tmp_path)
    background = [
        localize(c, api_port, receiver_port)
        for kind, body in blocks
        if kind == "background"
        for c in background_commands(body)
    ]
    script = steps_script([localize(b, api_port, receiver_port) for k, b in blocks if k == "run"])
    logs = [tmp_path / f"background-{n}.log" for n in range(len(background))]
    logs[[i for i, c in enumerate(background) if "webhooks listen" in c][0]] = Path(
        env["LISTEN_LOG"]
    )
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(started(command, tmp_path, env, log))
            for command, log in zip(background, logs, strict=True)
        ]

        def api_up() -> bool:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"http://127.0.0.1:{api_port}/healthz", timeout=2).ok
            return False

        wait_until(api_up, timeout=40, interval=0.25)
        result = run_steps(script, tmp_path, env)
        listened = Path(env["LISTEN_LOG"]).read_text()
        report = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        assert result.returncode == 0, f"{report}\nreceiver:\n{listened[-2000:]}"

    # The receiver got the very message the platform's report was answered with, signed.
    reported = re.findall(r'"id":\s*"(evt-[A-Za-z0-9]+)"', result.stdout)
    assert reported, report
    assert f"webhook-id: {reported[0]}" in listened, listened
    assert "v1," in listened  # a Standard Webhooks signature
    assert '"type": "sandbox.resumed"' in listened, listened
    # And its attempt reads back as a success on the organization face.
    assert re.search(r'"statusCode":\s*200', result.stdout), report
    assert not list(tmp_path.glob("*.json")), "a key or secret was written to a file"


@pytest.fixture
def answers_404() -> Iterator[int]:
    """A loopback server that answers every request 404."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_error(404)

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_step_whose_request_is_answered_with_an_error_fails_the_walkthrough(
    tmp_path, answers_404
):
    ok = run_steps(steps_script(["true"]), tmp_path, newcomer_env(tmp_path))
    assert ok.returncode == 0, ok.stderr
    script = steps_script([f"curl -s http://127.0.0.1:{answers_404}/v1/webhooks", "echo after"])
    failed = run_steps(script, tmp_path, newcomer_env(tmp_path))
    assert failed.returncode != 0
    assert "after" not in failed.stdout


def test_a_step_reporting_an_event_that_never_arrives_fails_the_walkthrough(tmp_path):
    env = newcomer_env(tmp_path)
    env["DELIVERY_WAIT_SECONDS"] = "1"
    Path(env["LISTEN_LOG"]).write_text("listening\n")
    failed = run_steps(steps_script(["echo /api/internal/events", "echo after"]), tmp_path, env)
    assert failed.returncode != 0
    assert "no delivery" in failed.stderr
    assert "after" not in failed.stdout
