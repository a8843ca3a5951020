"""The live socket (SPEC 7): Socket.IO at /api/webhook-socket.io/.

A client authenticates in the connection ``auth`` object (``{"apiKey": ...}`` or
``{"token": <jwt>}``) or with an ``X-API-Key`` / ``Authorization: Bearer`` header on the
handshake; anything else is refused. It then joins the rooms of ``shared.notify`` that
match what it may see (SPEC 3) and receives the events every process publishes there.
Clients send nothing: no client event has a handler.

Production runs it in gunicorn's ``gthread`` worker with simple-websocket (Flask-SocketIO's
threading mode); each open websocket holds one of the worker's threads.
"""

from __future__ import annotations

import logging

from flask import Flask, request
from flask_socketio import SocketIO, join_room
from sqlalchemy.exc import SQLAlchemyError

from shared import notify
from shared.config import get_settings
from shared.db import get_sessionmaker
from shared.errors import Unauthorized
from shared.services.auth import Principal, authenticate, is_platform_token

log = logging.getLogger("webhooks.socket")

SOCKET_PATH = "/api/webhook-socket.io"
# Clients only send the connect packet; anything big is not a Socket.IO client of ours.
MAX_CLIENT_MESSAGE_BYTES = 64 * 1024


def _credential(auth: object) -> str | None:
    """The key or JWT from the auth object, else from the handshake's headers."""
    if isinstance(auth, dict):
        for key in ("apiKey", "token"):
            value = auth.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    header = request.headers.get("X-API-Key", "").strip()
    if header:
        return header
    bearer = request.headers.get("Authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip() or None
    return None


def authenticate_socket(auth: object) -> Principal:
    """The user behind a connection attempt; ConnectionRefusedError when there is none."""
    credential = _credential(auth)
    if is_platform_token(credential):
        raise ConnectionRefusedError("The platform token is not accepted here; use an API key")
    try:
        # A short-lived session: the socket outlives any transaction it could hold.
        with get_sessionmaker()() as session:
            return authenticate(session, credential)
    except Unauthorized as exc:
        raise ConnectionRefusedError(exc.message) from None
    except SQLAlchemyError:
        log.warning("socket refused: database unavailable")
        raise ConnectionRefusedError("Service unavailable, retry later") from None


def init_realtime(app: Flask) -> SocketIO:
    """Attach the Socket.IO gateway to the app (a WSGI middleware on the socket path)."""
    settings = get_settings()
    socketio = SocketIO(
        app,
        path=SOCKET_PATH,
        # Threads, not gevent (which is installed for other reasons): gunicorn's gthread
        # worker and simple-websocket, as Flask-SocketIO documents for threaded servers.
        async_mode="threading",
        client_manager=notify.make_client_manager(settings, write_only=False),
        # Sockets authenticate with an explicit credential, never a cookie, so another
        # origin gains nothing a script with the key lacks; behind a proxy the Host the
        # server sees need not match the page's origin.
        cors_allowed_origins="*",
        max_http_buffer_size=MAX_CLIENT_MESSAGE_BYTES,
        # No Flask session: the socket carries no cookie state.
        manage_session=False,
        logger=False,
        engineio_logger=False,
    )

    @socketio.on("connect")
    def _connect(auth: object = None) -> None:
        principal = authenticate_socket(auth)
        for room in notify.rooms_for_principal(
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            role=principal.role,
        ):
            join_room(room)

    return socketio
