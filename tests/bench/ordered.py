"""Scenario 8: scenario 1's load to ordered endpoints, against the same load unordered.

docs/api.md §11.3: ordering must not cost throughput (target: ordered at least 90% of
unordered). The runs share one stack and follow each other, so a loaded machine moves
them alike: unordered, ordered (one event per sandbox, as in scenario 1: every delivery
is numbered and checked, none waits), and ordered with several events per sandbox (each
sandbox's deliveries to an endpoint go one after another), then unordered again: each
ratio is to the mean of the two unordered runs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from .harness import CpuMeter
from .report import num, table
from .scenarios import (
    BATCH,
    ENDPOINTS_PER_ORG,
    FEEDERS,
    INGEST,
    Context,
    create_endpoints,
    new_org,
    wait_receipts,
)

# Events per sandbox in the last run: a sandbox's lifecycle is a handful of events.
CHAINED = 5
TARGET = 0.9


def _events(org_id: str, tag: str, count: int, per_sandbox: int, run_id: str) -> list[dict]:
    """Events in acceptance order: event k of every sandbox before event k + 1 of any."""
    sandboxes = count // per_sandbox
    return [
        {
            "event": "sandbox.created",
            "organizationId": org_id,
            "eventId": f"{tag}-{run_id}-{i}",
            "id": f"sbx-{tag}-{i % sandboxes}",
            "state": "started",
            "class": "small",
            "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        for i in range(sandboxes * per_sandbox)
    ]


def _run(ctx: Context, tag: str, ordering: str, per_sandbox: int, count: int) -> dict:
    org_id, key = new_org(ctx, f"bench-{tag}")
    urls = [ctx.receiver.url(tag, "ok", i) for i in range(ENDPOINTS_PER_ORG)]
    create_endpoints(ctx, key, urls, ordering=ordering)
    events = _events(org_id, tag, count, per_sandbox, ctx.run_id)
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    errors: list[str] = []
    lock = threading.Lock()
    # Batches in order, one feeder per group of sandboxes' rounds: a batch of round k is
    # sent before any batch of round k + 1, as a platform reports a sandbox's events.
    per_round = max(1, (count // per_sandbox) // BATCH)

    def send(batch: list[dict]) -> None:
        status, body, _ = ctx.api.request("POST", INGEST, batch)
        if status != 202:
            with lock:
                errors.append(f"{status} {str(body)[:200]}")

    cpu = CpuMeter(ctx.stack)
    first = time.time()
    for start in range(0, len(batches), per_round):
        with ThreadPoolExecutor(FEEDERS) as pool:
            list(pool.map(send, batches[start : start + per_round]))
    expected = len(events) * ENDPOINTS_PER_ORG
    got = wait_receipts(ctx, tag, expected, min(3600, 120 + expected / 20))
    last = max((r[0] for r in ctx.receiver.records(tag)), default=first)
    used = cpu.stop()
    span = last - first
    return {
        # CPU of the service's own processes per delivery: other tenants' load moves the
        # rates, not these (PostgreSQL's figure counts every backend of the server).
        "cpu_ms_per_delivery": {
            group: round(used[group] * 1000 / max(got, 1), 3)
            for group in ("api", "workers", "postgres")
        },
        "ordering": ordering,
        "events_per_sandbox": per_sandbox,
        "posts_expected": expected,
        "posts_received": got,
        "seconds": round(span, 2),
        "deliveries_per_s": round(got / span, 1) if span > 0 else None,
        "ingest_errors": errors[:5],
    }


def scenario_8(ctx: Context) -> dict:
    """Deliveries/s of ordered endpoints against unordered ones, in one run."""
    count = ctx.scaled(20000, 10)
    runs = {
        "unordered": _run(ctx, "s8-none", "none", 1, count),
        "ordered": _run(ctx, "s8-resource", "resource", 1, count),
        f"ordered, {CHAINED} events per sandbox": _run(
            ctx, "s8-chained", "resource", CHAINED, count
        ),
        "unordered again": _run(ctx, "s8-none-2", "none", 1, count),
    }
    # The unordered runs bracket the ordered ones: the machine's load drifts over minutes.
    rates = [runs[k]["deliveries_per_s"] for k in ("unordered", "unordered again")]
    base = sum(rates) / 2 if all(rates) else None
    for run in runs.values():
        rate = run["deliveries_per_s"]
        run["ratio_to_unordered"] = round(rate / base, 3) if rate and base else None
    ctx.out(
        table(
            f"Scenario 8: ordered endpoints (target: ordered >= {TARGET:.0%} of unordered)",
            ["", "posts", "seconds", "posts/s", "ratio to unordered (mean)", "CPU ms/delivery"],
            [
                [
                    name,
                    f"{run['posts_received']}/{run['posts_expected']}",
                    num(run["seconds"], 2),
                    num(run["deliveries_per_s"]),
                    num(run["ratio_to_unordered"], 2),
                    ", ".join(f"{k} {v}" for k, v in run["cpu_ms_per_delivery"].items()),
                ]
                for name, run in runs.items()
            ],
        )
    )
    return {"runs": runs, "target": TARGET}
