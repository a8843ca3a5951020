"""Scenario 7: a noisy neighbour (issue 22; docs/api.md §11.7, first point).

Organization A reports 15,000 events at once (arrays from the feeder threads, as fast as
the api takes them), each making one delivery to A's endpoint. Organization B reports one
event every 0.5 s, by the clock, from A's first report until A's last delivery arrives.
Figures: A's drain time (first report to last successful receipt) and B's latency (from
the time each event was due to be reported to its receipt, so a slow ingest answer
counts), whose target is at most 1 s for every event. Part a: A's receiver answers at
once. Part b: A's receiver answers 500 for its first 15 s, so A's retries pile up in its
retry lane and fall due by the thousand while its first tries still wait.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from shared import lanes

from .harness import CpuMeter
from .report import ms, num, percentiles, table
from .scenarios import (
    INGEST,
    Context,
    create_endpoints,
    first_receipts,
    ingest_batches,
    make_event,
    new_org,
    wait_receipts,
    wait_until,
)

B_EVERY = 0.5
TARGET = 1.0


def _org_b(ctx: Context, a_id: str) -> tuple[str, str, int]:
    """B: the first organization made that is not in A's lane (docs/decisions.md)."""
    for tries in range(1, 50):
        org_id, key = new_org(ctx, f"bench-s7-b{tries}")
        if lanes.lane_of(org_id) != lanes.lane_of(a_id):
            return org_id, key, tries
    raise RuntimeError("no organization outside A's lane in 50 tries")


def _part(ctx: Context, part: str, fail_for: float) -> dict:
    """One run of A's burst against B's trickle; A's receiver fails for ``fail_for`` s."""
    a_events = ctx.scaled(15000, 500)
    a_tag, b_tag = f"s7{part}a", f"s7{part}b"
    a_id, a_key = new_org(ctx, f"bench-s7{part}-a")
    b_id, b_key, b_tries = _org_b(ctx, a_id)
    a_mode = "flaky" if fail_for else "ok"
    create_endpoints(ctx, a_key, [ctx.receiver.url(a_tag, a_mode, 0)])
    create_endpoints(ctx, b_key, [ctx.receiver.url(b_tag, "ok", 0)])
    ctx.out(
        f"  scenario 7{part}: A reports {a_events} events at once"
        + (f" to a receiver failing for {fail_for:.0f} s" if fail_for else "")
        + f"; B one every {B_EVERY} s until A's last delivery"
        f" (lanes {lanes.lane_of(a_id)} and {lanes.lane_of(b_id)})"
    )
    a_done = threading.Event()
    b_due: dict[str, float] = {}
    b_answers: list[float] = []
    b_errors: list[str] = []
    lock = threading.Lock()

    def send_b(index: int, due: float) -> None:
        status, body, elapsed = ctx.api.request(
            "POST", INGEST, make_event(b_id, b_tag, index, ctx.run_id)
        )
        with lock:
            b_answers.append(elapsed)
            if status == 202:
                b_due[body["messages"][0]["id"]] = due
            else:
                b_errors.append(f"{status} {str(body)[:200]}")

    def b_loop(start: float) -> None:
        # Open loop: each event is sent when due, whatever the previous answer took.
        with ThreadPoolExecutor(8) as pool:
            index = 0
            while not a_done.is_set():
                due = start + index * B_EVERY
                delay = due - time.time()
                if delay > 0 and a_done.wait(delay):
                    break
                pool.submit(send_b, index, due)
                index += 1

    cpu = CpuMeter(ctx.stack)
    start = time.time()
    if fail_for:
        ctx.receiver.fail_until(a_tag, start + fail_for)
    b_thread = threading.Thread(target=b_loop, args=(start,), daemon=True)
    b_thread.start()
    feed = ingest_batches(ctx, a_id, a_tag, a_events)
    got_a = wait_receipts(ctx, a_tag, a_events, timeout=600 + a_events / 20)
    a_done.set()
    cpu_used = cpu.stop()
    b_thread.join()
    wait_receipts(ctx, b_tag, len(b_due), timeout=60)
    a_records = ctx.receiver.records(a_tag)
    a_last = max((r[0] for r in a_records if 200 <= r[3] < 300), default=start)
    b_first = first_receipts(ctx.receiver.records(b_tag))
    latencies = [at - b_due[wid] for (wid, _path), at in b_first.items() if wid in b_due]
    b_stats = percentiles(latencies)
    within = sum(1 for latency in latencies if latency <= TARGET)
    wait_until(lambda: ctx.stack.queue_length() == 0, 60)
    result = {
        "a_receiver_failing_s": fail_for,
        "a_posts": len(a_records),
        "a_events": a_events,
        "a_received": got_a,
        "a_drain_s": round(a_last - feed["first_send"], 2),
        "a_ingest_s": round(feed["last_response"] - feed["first_send"], 2),
        "a_ingest_errors": feed["errors"][:5],
        "a_deliveries_per_s": round(got_a / (a_last - feed["first_send"]), 1)
        if a_last > feed["first_send"]
        else None,
        "b_events": len(b_due),
        "b_received": len(latencies),
        "b_latency": b_stats,
        "b_within_target": within,
        "b_ingest_response_time": percentiles(b_answers),
        "b_errors": b_errors[:5],
        "b_organizations_made": b_tries,
        "cpu_seconds": cpu_used,
    }
    ctx.out(
        table(
            f"Scenario 7{part}: noisy neighbour"
            + (f", A's receiver failing for its first {fail_for:.0f} s" if fail_for else "")
            + f" (target: each of B's events delivered within {TARGET:.0f} s while A drains)",
            ["", "events", "received", "drain", "p50", "p99", "max", "within 1 s"],
            [
                [
                    "A (burst)",
                    a_events,
                    got_a,
                    f"{result['a_drain_s']} s ({num(result['a_deliveries_per_s'])}/s"
                    + (f", {len(a_records)} posts)" if fail_for else ")"),
                    "",
                    "",
                    "",
                    "",
                ],
                [
                    "B (every 0.5 s)",
                    len(b_due),
                    len(latencies),
                    "",
                    ms(b_stats["p50"]),
                    ms(b_stats["p99"]),
                    ms(b_stats["max"]),
                    f"{within}/{len(b_due)}",
                ],
                [
                    "B ingest answer",
                    "",
                    "",
                    "",
                    ms(result["b_ingest_response_time"]["p50"]),
                    ms(result["b_ingest_response_time"]["p99"]),
                    ms(result["b_ingest_response_time"]["max"]),
                    "",
                ],
            ],
        )
    )
    ctx.out(
        "  CPU seconds until A's last receipt: "
        + ", ".join(f"{k} {cpu_used[k]}" for k in (*CpuMeter.GROUPS, "other_processes"))
    )
    return result


# A's receiver fails this long in part b: its retries (countdown tasks the workers hold
# until due) pile up in A's retry lane while its first tries still wait.
FAILING_FOR = 15.0


def scenario_7(ctx: Context) -> dict:
    """A's burst against B's trickle: (a) A's receiver healthy, (b) failing at first."""
    parts = {"a": _part(ctx, "a", 0.0)}
    wait_until(lambda: ctx.stack.queue_length() == 0, 120)
    parts["b"] = _part(ctx, "b", FAILING_FOR)
    return parts
