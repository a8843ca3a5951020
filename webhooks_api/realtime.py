"""The live socket (docs/api.md §7): Socket.IO at /api/webhook-socket.io/.

A client authenticates in the connection ``auth`` object (``{"apiKey": ...}`` or
``{"token": <jwt>}``) or with an ``X-API-Key`` / ``Authorization: Bearer`` header on the
handshake; anything else is refused. It then joins the rooms of ``shared.notify`` that
match what it may see (docs/api.md §3) and receives the events every process publishes there.
Clients send nothing: no client event has a handler.

A socket outlives the request that opened it, so each api process re-checks the
credentials of its own sockets (``SocketSessions``): a JWT's socket is disconnected when
the token expires, and every socket whose key was revoked, or whose user left its
organization or changed role, within RECHECK_EVERY seconds (a client reconnects and
joins the rooms of what it may see now).

Production runs it in gunicorn's ``gthread`` worker with simple-websocket (Flask-SocketIO's
threading mode); each open websocket holds one of the worker's threads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from flask import Flask, request
from flask_socketio import SocketIO, join_room
from sqlalchemy.exc import SQLAlchemyError

from shared import notify
from shared.config import get_settings
from shared.db import get_sessionmaker
from shared.errors import Unauthorized
from shared.services.auth import (
    Principal,
    authenticate,
    credential_expiry,
    current_principals,
    is_platform_token,
)

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


# How often every open socket's credential is checked against the database again (one
# query per 500 distinct keys): the longest a revoked key's socket stays connected.
RECHECK_EVERY = 10.0
# How often expiries are looked at: a JWT's socket closes within this of its ``exp``.
EXPIRY_TICK = 1.0


@dataclass(frozen=True)
class _OpenSocket:
    credential: str
    principal: Principal
    expires_at: float | None


class SocketSessions:
    """This process's authenticated sockets, closed once their credential no longer holds."""

    def __init__(self, socketio: SocketIO) -> None:
        self._socketio = socketio
        self._lock = threading.Lock()
        self._open: dict[str, _OpenSocket] = {}
        self._started = False
        self._last_recheck = time.monotonic()

    def add(self, sid: str, credential: str, principal: Principal) -> None:
        """Track a socket that has just authenticated."""
        entry = _OpenSocket(credential, principal, credential_expiry(credential))
        with self._lock:
            self._open[sid] = entry
            start, self._started = not self._started, True
        if start:
            # After gunicorn's fork, in the process that serves the sockets.
            self._socketio.start_background_task(self._run)

    def remove(self, sid: str) -> None:
        """Forget a socket that disconnected."""
        with self._lock:
            self._open.pop(sid, None)

    def _run(self) -> None:
        while True:
            time.sleep(EXPIRY_TICK)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the checker must outlive any one failure
                log.exception("socket credential check failed")

    def check(self) -> list[str]:
        """Disconnect the sockets whose credential expired or no longer authenticates."""
        now = time.time()
        with self._lock:
            sockets = dict(self._open)
        ended = {
            sid for sid, s in sockets.items() if s.expires_at is not None and s.expires_at <= now
        }
        if time.monotonic() - self._last_recheck >= RECHECK_EVERY:
            self._last_recheck = time.monotonic()
            live = {sid: s for sid, s in sockets.items() if sid not in ended}
            try:
                with get_sessionmaker()() as session:
                    current = current_principals(session, (s.credential for s in live.values()))
            except SQLAlchemyError:
                # An outage is no reason to drop every client; check again next time.
                log.warning("socket credential check skipped: database unavailable")
                current = None
            if current is not None:
                ended |= {
                    sid for sid, s in live.items() if current.get(s.credential) != s.principal
                }
        for sid in ended:
            self.remove(sid)
            try:
                self._socketio.server.disconnect(sid, namespace="/")
            except Exception:  # noqa: BLE001 - one socket's failure must not keep the others
                log.exception("could not close socket %s", sid)
        if ended:
            log.info("closed %d socket(s) whose credential no longer holds", len(ended))
        return sorted(ended)


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

    sessions = SocketSessions(socketio)
    relay = notify.make_relay(settings)
    relay_lock = threading.Lock()
    relay_started: list[bool] = []

    def _deliver(event: str, data: dict, rooms: object, namespace: str) -> None:
        socketio.emit(event, data, to=rooms, namespace=namespace)

    @socketio.on("connect")
    def _connect(auth: object = None) -> None:
        principal = authenticate_socket(auth)
        if relay is not None:
            with relay_lock:
                if not relay_started:
                    # In the process that serves the sockets (after gunicorn's fork), as
                    # python-socketio starts a client manager's listener.
                    relay_started.append(True)
                    socketio.start_background_task(relay.run, _deliver)
        for room in notify.rooms_for_principal(
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            role=principal.role,
        ):
            join_room(room)
        sessions.add(request.sid, _credential(auth) or "", principal)

    @socketio.on("disconnect")
    def _disconnect(*_args: object) -> None:
        sessions.remove(request.sid)

    return socketio
