"""Where one delivery's time goes: the worker's and the ingest's hot paths, in-process.

Runs the real code single-threaded against a scratch database (webhooks_bench_hotpath,
dropped afterwards) and the benchmark's receiver, with no broker consumer: enqueues are
counted instead of sent. For each path it reports wall and CPU time per call, SQL
statements and commits per call, and a cProfile breakdown by function.

    python -m tests.bench.hotpath --deliveries 500 [--pyinstrument]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from collections import Counter

from .harness import ADMIN_TOKEN, ENCRYPTION_KEY, ROOT, free_port, sa_url

DATABASE = "postgresql://postgres@127.0.0.1:5432/webhooks_bench_hotpath"


def _setup_env(redis_url: str) -> None:
    os.environ.update(
        {
            "DATABASE_URL": DATABASE,
            "REDIS_URL": redis_url,
            "WEBHOOKS_ADMIN_TOKEN": ADMIN_TOKEN,
            "WEBHOOKS_ENCRYPTION_KEY": ENCRYPTION_KEY,
            "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "127.0.0.0/8",
            "WEBHOOKS_WORKER_CONCURRENCY": "8",
        }
    )


def _reset_database() -> None:
    from sqlalchemy import create_engine, text

    from shared.migrate import upgrade

    base, _, name = sa_url(DATABASE).rpartition("/")
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    upgrade(sa_url(DATABASE))


def _drop_database() -> None:
    from sqlalchemy import create_engine, text

    base, _, name = sa_url(DATABASE).rpartition("/")
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class Counts:
    """SQL statements, commits and enqueues seen while active."""

    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.commits = 0
        self.enqueued: Counter[str] = Counter()
        self.checkouts = 0
        self.rollbacks = 0

    def reset(self) -> None:
        self.statements.clear()
        self.commits = 0
        self.enqueued.clear()
        self.checkouts = 0
        self.rollbacks = 0

    def summary(self, n: int) -> str:
        return (
            f"{sum(self.statements.values()) / n:.1f} SQL statements, {self.commits / n:.1f} "
            f"commits, {self.rollbacks / n:.1f} rollbacks and {self.checkouts / n:.1f} pool "
            "checkouts per call (statements seen by SQLAlchemy's events: the worker's claim "
            "and record go to the driver directly, one autocommit round trip each; the api "
            "pings a connection that sat idle for 2 s with a SELECT 1, the worker does not)"
        )


def _install_counters(counts: Counts) -> None:
    from sqlalchemy import event

    from shared import queue
    from shared.db import get_engine

    engine = get_engine()

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, parameters, context, executemany):
        counts.statements[" ".join(statement.split())[:90]] += 1

    @event.listens_for(engine, "commit")
    def _commit(conn):
        counts.commits += 1

    @event.listens_for(engine, "rollback")
    def _rollback(conn):
        counts.rollbacks += 1

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        counts.checkouts += 1

    def _sender(task, args, countdown, eta):
        counts.enqueued[task] += 1

    queue.configure(_sender)


def _profile_text(profiler: cProfile.Profile, limit: int) -> str:
    """The project's functions by cumulative time, then everything by own time."""
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stream.write("-- project functions, by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(r"/(shared|webhooks_api|webhooks_worker)/", limit)
    stream.write("-- every function, by own time\n")
    stats.sort_stats("tottime").print_stats(25)
    return stream.getvalue().replace(str(ROOT) + "/", "").replace(sys.prefix + "/lib/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.hotpath")
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--ingest-requests", type=int, default=300)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--limit", type=int, default=45, help="cProfile rows to print")
    parser.add_argument("--pyinstrument", action="store_true", help="also print pyinstrument")
    args = parser.parse_args(argv)
    _setup_env(args.redis_url)
    _reset_database()
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.receiver", "serve", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        receiver.stdout.readline()
        return _run(args, port)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
        from shared import db

        db.reset()
        _drop_database()


def _run(args: argparse.Namespace, port: int) -> int:
    from webhooks_api.app import create_app

    app = create_app({"TESTING": True})
    counts = Counts()
    _install_counters(counts)  # after create_app: it installs the Celery sender
    client = app.test_client()
    platform = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = client.post("/api/internal/organizations", json={"name": "hot"}, headers=platform).json
    org_id, key = body["organization"]["id"], body["apiKey"]
    for i in range(10):
        resp = client.post(
            "/v1/webhooks",
            json={
                "url": f"http://127.0.0.1:{port}/hot/ok/{i}",
                "event_types": ["sandbox.created"],
            },
            headers={"X-API-Key": key},
        )
        assert resp.status_code == 201, resp.json

    def event(i: int) -> dict:
        return {
            "event": "sandbox.created",
            "organizationId": org_id,
            "eventId": f"hot-{i}",
            "id": f"sbx-{i}",
            "state": "started",
            "class": "small",
            "createdAt": "2025-12-19T10:30:00.000Z",
        }

    out = []

    # -- ingest, one event per request (the Flask test client: no gunicorn, no socket)
    for i in range(20):  # warm up
        client.post("/api/internal/events", json=event(10_000_000 + i), headers=platform)
    # First without the profiler, whose own cost per call would hide small changes.
    cpu = time.process_time()
    for i in range(args.ingest_requests):
        client.post("/api/internal/events", json=event(20_000_000 + i), headers=platform)
    bare_cpu = (time.process_time() - cpu) / args.ingest_requests
    counts.reset()
    profiler = cProfile.Profile()
    cpu, wall = time.process_time(), time.perf_counter()
    profiler.enable()
    for i in range(args.ingest_requests):
        resp = client.post("/api/internal/events", json=event(i), headers=platform)
        assert resp.status_code == 202, resp.json
    profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = args.ingest_requests
    out.append(
        f"INGEST, one event per request: {bare_cpu * 1000:.2f} ms CPU per request unprofiled; "
        f"profiled {wall / n * 1000:.2f} ms wall, {cpu / n * 1000:.2f} ms CPU; "
        f"{counts.summary(n)}; enqueued {dict(counts.enqueued)}"
    )
    out.append("  statements per request:")
    out.extend(f"    {v / n:5.2f}  {k}" for k, v in counts.statements.most_common(12))
    out.append(_profile_text(profiler, args.limit))

    # -- fan-out of the ingested messages (one task per message, as single ingests make)
    from sqlalchemy import select

    from shared.db import get_sessionmaker, session_scope
    from shared.models import Delivery, Message
    from shared.services import fanout

    with session_scope() as session:
        ids = list(session.scalars(select(Message.id).where(Message.fanned_out_at.is_(None))))
    wanted = max(1, args.deliveries // 10)
    if not ids:
        out.append(
            "FAN-OUT: made by each ingest above, in its own transaction (small fan-outs, "
            "shared.services.ingest.INLINE_FANOUT_*); no fan-out task to measure"
        )
    else:
        counts.reset()
        cpu, wall = time.process_time(), time.perf_counter()
        for message_id in ids[:wanted]:
            with session_scope() as session:
                fanout.fan_out(session, message_ids=[message_id])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        out.append(
            f"FAN-OUT task, one message to 10 endpoints per task: {wall / wanted * 1000:.2f} "
            f"ms wall, {cpu / wanted * 1000:.2f} ms CPU per message; {counts.summary(wanted)}; "
            f"enqueued {dict(counts.enqueued)}"
        )
        out.extend(f"    {v / wanted:5.2f}  {k}" for k, v in counts.statements.most_common(8))

    # -- the delivery task body: claim, build, post, record, log, publish
    from shared import db
    from webhooks_worker import tasks

    db.skip_pre_ping()  # as the worker process does (webhooks_worker.celery_app)
    _install_counters(counts)

    with session_scope() as session:
        delivery_ids = list(
            session.scalars(select(Delivery.id).where(Delivery.status == "pending"))
        )
    for delivery_id in delivery_ids[:10]:  # warm up: pools, caches
        tasks.deliver.run(delivery_id, 1)
    # First without the profiler (its own cost per call would hide small changes).
    bare = delivery_ids[10 : 10 + args.deliveries]
    cpu = time.process_time()
    for delivery_id in bare:
        tasks.deliver.run(delivery_id, 1)
    bare_cpu = (time.process_time() - cpu) / max(len(bare), 1)
    todo = delivery_ids[10 + len(bare) : 10 + len(bare) + args.deliveries]
    counts.reset()
    profiler = cProfile.Profile()
    instrument = None
    if args.pyinstrument:
        from pyinstrument import Profiler

        instrument = Profiler(interval=0.0005)
        instrument.start()
    cpu, wall = time.process_time(), time.perf_counter()
    profiler.enable()
    for delivery_id in todo:
        tasks.deliver.run(delivery_id, 1)
    profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if instrument is not None:
        instrument.stop()
    n = max(len(todo), 1)
    out.append(
        f"DELIVER task body (tasks.deliver.run, no Celery): {bare_cpu * 1000:.2f} ms CPU "
        f"per delivery unprofiled; profiled {wall / n * 1000:.2f} ms wall, "
        f"{cpu / n * 1000:.2f} ms CPU; {counts.summary(n)}; enqueued "
        f"{dict(counts.enqueued)}"
    )
    out.append("  statements per delivery:")
    out.extend(f"    {v / n:5.2f}  {k}" for k, v in counts.statements.most_common(15))
    out.append(_profile_text(profiler, args.limit))
    if instrument is not None:
        out.append(instrument.output_text(unicode=False, color=False, show_all=False))
    with get_sessionmaker()() as session:
        done = session.scalar(select(Delivery.id).where(Delivery.status == "delivered").limit(1))
    out.append(f"(sanity: a delivered row exists: {done is not None})")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
