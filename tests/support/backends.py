"""PostgreSQL backends of a pool, and ending one as a restart would."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from shared.db import get_engine


def backend_pid(engine: Engine) -> int:
    """The server process id behind a connection the engine checks out."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate_backend(pid: int) -> None:
    """End a PostgreSQL backend, as a restart or an idle-connection killer would."""
    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        conn.commit()
        deadline = time.monotonic() + 5
        while conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one():
            assert time.monotonic() < deadline, "backend still alive"
            conn.rollback()
            time.sleep(0.02)
