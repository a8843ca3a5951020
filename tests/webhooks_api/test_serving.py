"""The Procfile's web process names a taken port at once instead of retrying for 5 s."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time

import requests
from honcho.environ import parse_procfile

from tests.support.stack import ROOT, free_port
from tests.support.waiting import wait_until


def web_gunicorn_argv(port: int) -> list[str]:
    """The gunicorn command of the Procfile's web line, as honcho would run it on ``port``."""
    web = parse_procfile((ROOT / "Procfile").read_text()).processes["web"]
    gunicorn = web.split("&&")[-1].replace("${PORT:-8000}", str(port))
    argv = shlex.split(gunicorn)
    assert argv[:2] == ["exec", "gunicorn"], argv
    # The control socket's default path is shared by every gunicorn of the user.
    return [sys.executable, "-m", "gunicorn", *argv[2:], "--no-control-socket"]


def test_the_web_process_names_a_taken_port_and_exits_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            web_gunicorn_argv(port),
            cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    # Gunicorn's own way is five binds a second apart and "Can't connect", no way out named.
    assert elapsed < 5
    assert "Retrying" not in done.stderr
    assert (
        f"port {port} on 0.0.0.0 is already in use by another program; stop it, or choose "
        f"another port with the PORT variable (PORT={port + 1})"
    ) in done.stderr


def test_the_web_process_starts_normally_on_a_free_port():
    port = free_port()
    web = subprocess.Popen(
        web_gunicorn_argv(port), cwd=ROOT, env=dict(os.environ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def up() -> bool:
            assert web.poll() is None, "the web process exited"
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, timeout=30)
    finally:
        web.terminate()
        web.wait(timeout=30)
