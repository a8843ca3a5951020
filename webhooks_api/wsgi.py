"""WSGI entry point for gunicorn: ``gunicorn webhooks_api.wsgi:app``."""

from __future__ import annotations

import sys

from shared.config import ConfigError, get_settings

try:
    get_settings()
except ConfigError as exc:  # a bad setting stops the process with its name
    sys.stderr.write(f"configuration error: {exc}\n")
    raise SystemExit(2) from None

from .app import create_app  # noqa: E402

app = create_app()
