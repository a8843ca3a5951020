"""WSGI entry point for gunicorn: ``gunicorn webhooks_api.wsgi:app``."""

from __future__ import annotations

from shared.config import settings_or_exit

# A bad setting stops the process with its name. Exit status 4 is gunicorn's "app failed
# to load", which stops the whole server; any other status has a worker booted again and
# again while the server keeps its port.
APP_LOAD_ERROR = 4
settings_or_exit(APP_LOAD_ERROR)

import gc  # noqa: E402

from .app import create_app  # noqa: E402

app = create_app()
# The app's ~140,000 long-lived objects (Flask, SQLAlchemy, marshmallow, the schemas)
# would be walked by every full collection, with every request thread stopped meanwhile.
gc.freeze()
