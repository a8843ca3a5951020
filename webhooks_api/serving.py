"""Starting the api's HTTP server: a taken port is named at once, in one line.

Gunicorn meets a port someone else listens on by retrying the bind five times, a second
apart, and then exits with "Can't connect", without saying which port to change or how.
``webhooks up`` and the Procfile's web process (through ``on_starting``, gunicorn's
documented server hook, loaded with ``-c python:webhooks_api.serving``) look first.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket already holds ``host:port`` (bound as gunicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Gunicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free, a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            # Any other refusal (no such address, a privileged port) is gunicorn's to report.
            return exc.errno == errno.EADDRINUSE
    return False


def busy_port_message(host: str, port: int, how: str) -> str:
    """The one line that says the port is taken and how to choose another."""
    return f"port {port} on {host} is already in use by another program; {how}"


def on_starting(server: Any) -> None:
    """Gunicorn hook: exit 1 naming the port when one of the bind addresses is taken."""
    for address in server.cfg.address:
        if not isinstance(address, tuple):  # a unix socket path
            continue
        host, port = address[0], address[1]
        if port_in_use(host, port):
            sys.stderr.write(
                busy_port_message(
                    host,
                    port,
                    "stop it, or choose another port with the PORT variable "
                    f"(PORT={port + 1}) or gunicorn's --bind",
                )
                + "\n"
            )
            sys.stderr.flush()
            raise SystemExit(1)
