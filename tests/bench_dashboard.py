"""Server time of the dashboard's Messages tab with 100,000 messages in one organization.

    python -m tests.bench_dashboard [--messages 100000] [--repeat 20] [--keep]
        [--database-url postgresql://postgres@127.0.0.1:5432/webhooks_bench_dashboard]

A script, not a test: it recreates a scratch PostgreSQL database (the one named above,
built by the migrations, dropped at the end unless --keep), bulk-inserts the messages
with one delivery each, and times ``GET /api/webhooks/organizations/{id}/messages``
in-process through the Flask app (authentication, query and serialization included; no
network): the first page, the second, pages deep in the list reached through the cursor,
and the filters the dashboard offers. The target of issue 4 is under 300 ms of server
time for the first page and any later page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/webhooks_bench_dashboard"
TARGET_MS = 300.0
BATCH = 5000
EVENT_TYPES = ("sandbox.created", "sandbox.state.updated", "snapshot.created", "volume.created")


def _configure(database_url: str) -> None:
    """Settings for this process, before any project module reads them."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("WEBHOOKS_DATA_DIR", tempfile.mkdtemp(prefix="webhooks-bench-dash-"))
    os.environ.setdefault("WEBHOOKS_ENCRYPTION_KEY", "0dmv2Bhpj4d6C9W-YKaRH4A2e-_SMOiP5d7oBkBHkxM=")
    os.environ.setdefault("WEBHOOKS_ADMIN_TOKEN", "bench-platform-token-0123456789")
    os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "*")


def _recreate(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    from shared.migrate import upgrade

    base, _, name = database_url.rpartition("/")
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    upgrade(database_url)


def _seed(count: int) -> tuple[str, str, str]:
    """One organization with one endpoint and ``count`` messages; its id, key and endpoint."""
    from sqlalchemy import insert, text

    from shared.crypto import encrypt, new_signing_secret
    from shared.db import get_engine, session_scope
    from shared.models import Delivery, Endpoint, Message, new_id
    from shared.services import organizations

    with session_scope() as session:
        org, root = organizations.create_organization(session, name="Bench")
        endpoint = Endpoint(
            id=new_id("whk"),
            organization_id=org.id,
            user_id=None,
            scope="account",
            url="https://hooks.example.com/in",
            name="Bench receiver",
            event_types=[],
            is_active=True,
            payload_format="daytona",
            timeout_seconds=30,
            max_retries=3,
            secret_encrypted=encrypt(new_signing_secret()),
        )
        session.add(endpoint)
        org_id, key, endpoint_id = org.id, root.api_key, endpoint.id

    # A month of traffic, newest last; every 50th delivery failed, every 500th pending.
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / count
    engine = get_engine()
    began = time.perf_counter()
    for offset in range(0, count, BATCH):
        messages, deliveries = [], []
        for n in range(offset, min(offset + BATCH, count)):
            created = start + step * n
            stamp = created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z"
            message_id = f"evt-{n:015d}"
            status = "pending" if n % 500 == 0 else "failed" if n % 50 == 0 else "delivered"
            messages.append(
                {
                    "id": message_id,
                    "organization_id": org_id,
                    "event_type": EVENT_TYPES[n % len(EVENT_TYPES)],
                    "event_id": None,
                    "payload": {"id": f"sbx-{n}", "organizationId": org_id, "state": "started"},
                    "timestamp": stamp,
                    "custom": False,
                    "test": False,
                    "target_endpoint_id": None,
                    "fanned_out_at": created,
                    "created_at": created,
                }
            )
            deliveries.append(
                {
                    "id": f"whd-{n:015d}",
                    "message_id": message_id,
                    "endpoint_id": endpoint_id,
                    "organization_id": org_id,
                    "event_type": EVENT_TYPES[n % len(EVENT_TYPES)],
                    "status": status,
                    "attempt_count": 1,
                    "extra_attempt_count": 0,
                    "max_attempts": 4,
                    "created_at": created,
                    "updated_at": created,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Message), messages)
            conn.execute(insert(Delivery), deliveries)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE messages"))
        conn.execute(text("ANALYZE deliveries"))
    print(f"seeded {count:,} messages and deliveries in {time.perf_counter() - began:.1f} s")
    return org_id, key, endpoint_id


def _time(client, url: str, key: str, repeat: int) -> tuple[list[float], dict]:
    timings, body = [], {}
    for _ in range(repeat):
        began = time.perf_counter()
        resp = client.get(url, headers={"X-API-Key": key})
        timings.append((time.perf_counter() - began) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"GET {url} answered {resp.status_code}: {resp.get_data(True)}")
        body = resp.get_json()
    return timings, body


def _row(label: str, timings: list[float], items: int) -> tuple[str, float]:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    verdict = "ok" if p95 < TARGET_MS else "SLOW"
    print(
        f"  {label:<44} {items:>4} rows  median {median:7.1f} ms  p95 {p95:7.1f} ms  "
        f"max {ordered[-1]:7.1f} ms  {verdict}"
    )
    return label, p95


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_dashboard", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20, help="requests per measured page")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DASHBOARD_DATABASE_URL", DEFAULT_DB),
        help="scratch PostgreSQL database (dropped and recreated!)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    _configure(args.database_url)
    from shared.config import get_settings

    url = get_settings().database_url  # normalized to the psycopg2 driver
    _recreate(url)
    try:
        return _measure(args)
    finally:
        if not args.keep:
            _drop(url)


def _drop(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    from shared.db import reset

    reset()
    base, _, name = database_url.rpartition("/")
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _measure(args: argparse.Namespace) -> int:
    org_id, key, endpoint_id = _seed(args.messages)

    from webhooks_api.app import create_app

    client = create_app({"TESTING": True}).test_client()
    base = f"/api/webhooks/organizations/{org_id}/messages"
    results = []
    print(f"server time of GET {base} ({args.repeat} requests each):")
    _time(client, base, key, 3)  # warm the pools and caches

    timings, first = _time(client, f"{base}?limit=50", key, args.repeat)
    results.append(_row("first page (limit 50)", timings, len(first["items"])))
    timings, second = _time(client, f"{base}?limit=50&cursor={first['nextCursor']}", key, 1)
    timings, _ = _time(client, f"{base}?limit=50&cursor={first['nextCursor']}", key, args.repeat)
    results.append(_row("second page (cursor)", timings, len(second["items"])))

    # Walk the whole list with the largest pages, keeping cursors at a few depths.
    depths = {args.messages // 4: None, args.messages // 2: None, args.messages - 250: None}
    cursor, seen, walk_timings = None, 0, []
    while True:
        url = f"{base}?limit=200" + (f"&cursor={cursor}" if cursor else "")
        began = time.perf_counter()
        page = client.get(url, headers={"X-API-Key": key}).get_json()
        walk_timings.append((time.perf_counter() - began) * 1000)
        seen += len(page["items"])
        for depth in depths:
            if depths[depth] is None and seen >= depth:
                depths[depth] = page["nextCursor"]
        cursor = page["nextCursor"]
        if not cursor:
            break
    if seen != args.messages:
        raise SystemExit(f"the cursor walk saw {seen} messages, expected {args.messages}")
    results.append(
        _row(f"every page of the walk (limit 200, {len(walk_timings)} pages)", walk_timings, 200)
    )
    for depth, deep_cursor in depths.items():
        if deep_cursor:
            timings, page = _time(client, f"{base}?limit=50&cursor={deep_cursor}", key, args.repeat)
            results.append(
                _row(f"page after message {depth:,} (cursor)", timings, len(page["items"]))
            )

    for label, query in (
        ("filter eventType=snapshot.created", "eventType=snapshot.created"),
        ("filter endpointId (event history)", f"endpointId={endpoint_id}"),
        ("filter status=failed (1 in 50)", "status=failed"),
        ("filter status=pending (1 in 500)", "status=pending"),
        ("filter after/before (one day)", _day_window()),
    ):
        timings, page = _time(client, f"{base}?limit=50&{query}", key, args.repeat)
        results.append(_row(label, timings, len(page["items"])))
        if page.get("nextCursor"):
            timings, later = _time(
                client, f"{base}?limit=50&{query}&cursor={page['nextCursor']}", key, args.repeat
            )
            results.append(_row(label + ", next page", timings, len(later["items"])))

    slow = [label for label, p95 in results if p95 >= TARGET_MS]
    print(f"target: p95 under {TARGET_MS:.0f} ms -> " + ("met" if not slow else f"MISSED: {slow}"))
    return 1 if slow else 0


def _day_window() -> str:
    end = datetime.now(UTC) - timedelta(days=10)
    start = end - timedelta(days=1)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f"after={start.strftime(fmt)}&before={end.strftime(fmt)}"


if __name__ == "__main__":
    sys.exit(main())
