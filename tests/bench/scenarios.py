"""The six scenarios of issue 6. Each returns a dict of figures and prints one table."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .harness import (
    BenchConfig,
    CpuMeter,
    Http,
    ReceiverClient,
    RssSampler,
    Stack,
    cpu_seconds,
    process_tree,
    tuning,
)
from .report import ms, num, percentiles, table

INGEST = "/api/internal/events"
ENDPOINTS_PER_ORG = 10
BATCH = 100
FEEDERS = 4


@dataclass
class Context:
    """What every scenario gets."""

    stack: Stack
    config: BenchConfig
    receiver: ReceiverClient
    sampler: RssSampler
    results: dict
    out: Callable[[str], None] = print
    run_id: str = field(default_factory=lambda: str(int(time.time())))

    @property
    def api(self) -> Http:
        return self.stack.api

    def scaled(self, value: float, minimum: float) -> int:
        return max(int(minimum), round(value * self.config.scale))


# ---- helpers -------------------------------------------------------------------------------


def new_org(ctx: Context, name: str) -> tuple[str, str]:
    status, body, _ = ctx.api.request("POST", "/api/internal/organizations", {"name": name})
    if status != 201:
        raise RuntimeError(f"organization not created: {status} {body}")
    return body["organization"]["id"], body["apiKey"]


def create_endpoints(
    ctx: Context,
    key: str,
    urls: list[str],
    threads: int = 8,
    each: Callable[[int], dict] | None = None,
    **options: int,
) -> list[str]:
    """Create /v1 endpoints subscribed to sandbox.created; their ids in the order of urls.

    ``each(i)`` adds options of the i-th endpoint alone (its own payload filter, say).
    """
    client = Http(f"http://127.0.0.1:{ctx.api.port}")

    def create(index: int) -> str:
        extra = each(index) if each else {}
        status, body, _ = client.request(
            "POST",
            "/v1/webhooks",
            {"url": urls[index], "event_types": ["sandbox.created"], **options, **extra},
            headers={"X-API-Key": key},
        )
        if status != 201:
            raise RuntimeError(f"endpoint not created: {status} {body}")
        return body["data"]["endpoint_id"]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(create, range(len(urls))))


def delete_endpoint(ctx: Context, key: str, endpoint_id: str) -> None:
    ctx.api.request("DELETE", f"/v1/webhooks/{endpoint_id}", headers={"X-API-Key": key})


def make_event(org_id: str, tag: str, index: int, run_id: str) -> dict:
    """A sandbox.created event as the platform reports it, with a unique eventId."""
    return {
        "event": "sandbox.created",
        "organizationId": org_id,
        "eventId": f"{tag}-{run_id}-{index}",
        "id": f"sbx-{tag}-{index}",
        "state": "started",
        "class": "small",
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def ingest_batches(ctx: Context, org_id: str, tag: str, count: int, threads: int = FEEDERS) -> dict:
    """Send count events in arrays of BATCH from threads, as fast as the api takes them."""
    batches = [
        [make_event(org_id, tag, i, ctx.run_id) for i in range(start, min(start + BATCH, count))]
        for start in range(0, count, BATCH)
    ]
    times: list[float] = []
    ids: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def send(batch: list[dict]) -> None:
        status, body, elapsed = ctx.api.request("POST", INGEST, batch)
        with lock:
            times.append(elapsed)
            if status == 202:
                ids.extend(m["id"] for m in body["messages"])
            else:
                errors.append(f"{status} {str(body)[:200]}")

    first = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, batches))
    last = time.time()
    return {
        "first_send": first,
        "last_response": last,
        "ids": ids,
        "errors": errors,
        "response_time": percentiles(times),
        "events_per_s": count / (last - first) if last > first else None,
    }


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def wait_receipts(ctx: Context, tag: str, expected: int, timeout: float, ok: bool = True) -> int:
    """Wait until the receiver has expected requests (2xx ones if ok) under tag."""
    key = "ok" if ok else "count"
    got = [0]

    def done() -> bool:
        got[0] = ctx.receiver.count(tag)[key]
        return got[0] >= expected

    wait_until(done, timeout, interval=0.2)
    return got[0]


def wait_queue_empty(ctx: Context, timeout: float = 120) -> bool:
    return wait_until(lambda: ctx.stack.queue_length() == 0, timeout, interval=0.5)


def first_receipts(records: list[list], status_ok: bool = True) -> dict[tuple[str, str], float]:
    """The first arrival time of each (webhook-id, path)."""
    first: dict[tuple[str, str], float] = {}
    for at, wid, path, status in records:
        if status_ok and not 200 <= status < 300:
            continue
        key = (wid, path)
        if key not in first or at < first[key]:
            first[key] = at
    return first


# How old a results file's scenario 1 may be for scenarios 2 and 4 of a later run to use
# its rate: this machine's speed moves by a third within an hour, and a rate it can no
# longer reach puts the 80% level over capacity.
PREVIOUS_RATE_MAX_AGE_S = 15 * 60


NO_RATE = (
    "scenario {scenario} needs scenario 1's rate: run it too, or pass --rate "
    "(a results file counts only when it is of the same code and worker settings and "
    f"under {PREVIOUS_RATE_MAX_AGE_S // 60} minutes old)"
)


def delivery_rate(ctx: Context) -> tuple[float | None, str]:
    """Scenario 1's deliveries/s, for the constant-rate scenarios."""
    s1 = ctx.results.get("scenarios", {}).get("1")
    if s1 and s1.get("service", {}).get("deliveries_per_s"):
        return s1["service"]["deliveries_per_s"], "scenario 1 of this run"
    if ctx.config.rate:
        return ctx.config.rate, "--rate"
    previous = ctx.results.get("previous_rate")
    if previous:
        return previous, "scenario 1 of a results file of the last minutes, same code"
    return None, ""


@dataclass
class OpenLoop:
    """What an open-loop sender did: when each message was due, and how the api answered."""

    due_by_id: dict[str, float]
    response_times: list[float]
    send_lag: list[float]
    errors: list[str]
    started: float
    finished: float


def open_loop(ctx: Context, org_id: str, tag: str, event_rate: float, count: int) -> OpenLoop:
    """Send count single events at event_rate by the clock, whatever the answers take.

    Each event's latency is measured from the time it was due, so time spent queued
    behind a slow api counts (no coordinated omission).
    """
    due_by_id: dict[str, float] = {}
    response_times: list[float] = []
    send_lag: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    offset = f"{tag}r{int(event_rate * 1000)}"

    def send(index: int, due: float) -> None:
        lag = time.time() - due
        status, body, elapsed = ctx.api.request(
            "POST", INGEST, make_event(org_id, offset, index, ctx.run_id)
        )
        with lock:
            send_lag.append(lag)
            response_times.append(elapsed)
            if status == 202:
                due_by_id[body["messages"][0]["id"]] = due
            else:
                errors.append(f"{status} {str(body)[:200]}")

    start = time.time() + 0.3
    with ThreadPoolExecutor(32) as pool:
        for index in range(count):
            due = start + index / event_rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, index, due)
    return OpenLoop(due_by_id, response_times, send_lag, errors, start, time.time())


def latency_run(
    ctx: Context,
    org_id: str,
    tag: str,
    endpoint_paths: dict[str, bool],
    delivery_rate_target: float,
    seconds: float,
) -> dict:
    """One constant-rate level: send, wait for the healthy receipts, compute latencies.

    endpoint_paths maps each endpoint's path to whether it is healthy (answers at once).
    """
    healthy = [p for p, ok in endpoint_paths.items() if ok]
    event_rate = delivery_rate_target / len(endpoint_paths)
    count = max(10, round(event_rate * seconds))
    ctx.receiver.reset(tag)
    loop = open_loop(ctx, org_id, tag, event_rate, count)
    expected = len(loop.due_by_id) * len(healthy)
    got = wait_receipts(ctx, tag, expected, timeout=seconds * 3 + 60)
    records = ctx.receiver.records(tag)
    latencies: list[float] = []
    last = loop.started
    for (wid, path), at in first_receipts(records).items():
        due = loop.due_by_id.get(wid)
        if due is None or path not in endpoint_paths or not endpoint_paths[path]:
            continue
        latencies.append(at - due)
        last = max(last, at)
    span = last - loop.started
    return {
        "offered_deliveries_per_s": round(delivery_rate_target, 1),
        "events": count,
        "event_rate": round(event_rate, 2),
        "healthy_expected": expected,
        "healthy_received": got,
        "complete": got >= expected,
        "latency": percentiles(latencies),
        "healthy_deliveries_per_s": round(len(latencies) / span, 1) if span > 0 else None,
        "healthy_offered_per_s": round(event_rate * len(healthy), 1),
        "ingest_response_time": percentiles(loop.response_times),
        "send_lag_max": max(loop.send_lag) if loop.send_lag else None,
        "errors": loop.errors[:5],
        "hung_requests": sum(1 for r in records if r[3] == 0),
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---- 1. steady throughput ----------------------------------------------------------------


def scenario_1(ctx: Context) -> dict:
    """N events to 10 endpoints; deliveries/s first ingest to last receipt; bare baseline."""
    tag = "s1"
    events = ctx.scaled(20000, 10)
    expected = events * ENDPOINTS_PER_ORG
    ctx.receiver.reset(tag)  # a second round counts only its own posts
    org_id, key = new_org(ctx, "bench-s1")
    create_endpoints(ctx, key, [ctx.receiver.url(tag, "ok", i) for i in range(ENDPOINTS_PER_ORG)])
    ctx.out(f"  scenario 1: {events} events x {ENDPOINTS_PER_ORG} endpoints = {expected} posts")
    cpu = CpuMeter(ctx.stack)
    feed = ingest_batches(ctx, org_id, tag, events)
    timeout = min(3600, 120 + expected / 20)
    got = wait_receipts(ctx, tag, expected, timeout)
    records = ctx.receiver.records(tag)
    cpu_used = cpu.stop()
    last_receipt = max((r[0] for r in records), default=feed["first_send"])
    unique = len({(r[1], r[2]) for r in records})
    # Every attempt row committed: the attempt is recorded just after the post returns.
    counts: dict[str, object] = {}

    def all_recorded() -> bool:
        row = ctx.stack.rows(
            "SELECT (SELECT count(*) FROM deliveries WHERE organization_id = :o),"
            " (SELECT count(*) FROM deliveries WHERE organization_id = :o"
            "   AND status = 'delivered'),"
            " (SELECT count(*) FROM attempts WHERE organization_id = :o),"
            " (SELECT max(created_at) FROM attempts WHERE organization_id = :o)",
            o=org_id,
        )[0]
        counts.update(deliveries=row[0], delivered=row[1], attempts=row[2], last_attempt=row[3])
        return row[2] >= expected and row[1] >= expected

    recorded = wait_until(all_recorded, 60, interval=0.5)
    span = last_receipt - feed["first_send"]
    last_attempt = counts["last_attempt"]
    recorded_span = _aware(last_attempt).timestamp() - feed["first_send"] if last_attempt else None
    service = {
        "events": events,
        "posts_expected": expected,
        "posts_received": got,
        "unique_received": unique,
        "duplicates": len(records) - unique,
        "deliveries": counts["deliveries"],
        "delivered": counts["delivered"],
        "attempts": counts["attempts"],
        "every_attempt_recorded": recorded and counts["attempts"] == counts["deliveries"],
        "seconds": round(span, 2),
        "deliveries_per_s": round(got / span, 1) if span > 0 else None,
        "deliveries_per_s_to_last_record": (
            round(expected / recorded_span, 1) if recorded_span else None
        ),
        "ingest_events_per_s": round(feed["events_per_s"], 1),
        "ingest_seconds": round(feed["last_response"] - feed["first_send"], 2),
        "ingest_batch_response_time": feed["response_time"],
        "ingest_errors": feed["errors"][:5],
        "cpu_seconds": cpu_used,
        "cpu_ms_per_delivery": {
            k: round(v * 1000 / max(got, 1), 3) for k, v in cpu_used.items() if k in CpuMeter.GROUPS
        },
        "peak_worker_rss_mb": round(ctx.sampler.peak / 2**20, 1),
    }
    # The workers' CPU per delivery hardly moves with other load on the machine: printed
    # before the baselines run, so that comparing two versions of the code need not wait.
    ctx.out(
        f"  service: {num(service['deliveries_per_s'])} deliveries/s, workers "
        f"{service['cpu_ms_per_delivery'].get('workers', 0):.3f} ms CPU per delivery; "
        "running baselines..."
    )
    from .baseline import NEW_CONNECTION_TASK, TASK

    baseline = run_baseline(ctx, expected, task=TASK, tag="base")
    new_connection = run_baseline(ctx, expected, task=NEW_CONNECTION_TASK, tag="base-new")
    # The bare task in the service's own worker design: what the design allows at most.
    ceiling = run_baseline(ctx, expected, task=TASK, tag="base-ceiling", ceiling=True)

    def rate_ratio(rate: float | None, reference: dict) -> float | None:
        return rate / reference["posts_per_s"] if rate and reference["posts_per_s"] else None

    ratio = rate_ratio(service["deliveries_per_s"], baseline)
    ratio_new_connection = rate_ratio(service["deliveries_per_s"], new_connection)
    ceiling_ratio = rate_ratio(ceiling["posts_per_s"], baseline)
    share_of_ceiling = rate_ratio(service["deliveries_per_s"], ceiling)
    # The service's whole cost per delivery (api, workers, beat, database, broker), against
    # the bare task's: what the ratio would be if CPU were the only limit. Other engineers'
    # processes on a shared machine move the wall-clock ratio, not this one.
    service_cpu = (
        sum(cpu_used[k] for k in ("api", "workers", "beat", "postgres", "redis"))
        * 1000
        / max(got, 1)
    )
    service["cpu_ms_per_delivery_total"] = round(service_cpu, 3)
    cpu_ratio = baseline["cpu_ms_per_post"] / service_cpu if service_cpu else None
    result = {
        "service": service,
        # The keep-alive bare task: what the ratio is computed against.
        "baseline": baseline,
        "baseline_new_connection": new_connection,
        "ratio": round(ratio, 3) if ratio else None,
        "ratio_to_new_connection": (
            round(ratio_new_connection, 3) if ratio_new_connection else None
        ),
        "cpu_efficiency_ratio": round(cpu_ratio, 3) if cpu_ratio else None,
        # The bare task on the service's workers, and the service as a share of it.
        "ceiling": ceiling,
        "ceiling_ratio": round(ceiling_ratio, 3) if ceiling_ratio else None,
        "service_share_of_ceiling": round(share_of_ceiling, 3) if share_of_ceiling else None,
    }
    ctx.out(
        table(
            "Scenario 1: steady throughput (target: service >= 1.5 x baseline, every attempt "
            "recorded)",
            ["", "posts", "seconds", "posts/s", "notes"],
            [
                [
                    "service (TUNED)" if tuning(ctx.config) else "service",
                    f"{got}/{expected}",
                    num(span, 2),
                    num(service["deliveries_per_s"]),
                    f"attempts={counts['attempts']} delivered={counts['delivered']} "
                    f"dup={service['duplicates']} ingest={num(feed['events_per_s'])} ev/s",
                ],
                [
                    "baseline",
                    f"{baseline['posts_received']}/{expected}",
                    num(baseline["seconds"], 2),
                    num(baseline["posts_per_s"]),
                    f"bare Celery prefork x{ctx.config.baseline_concurrency}, one "
                    "requests.Session per process (keep-alive)",
                ],
                ["ratio", "", "", num(ratio, 2), "target >= 1.50, against the line above"],
                [
                    "baseline, new connection",
                    f"{new_connection['posts_received']}/{expected}",
                    num(new_connection["seconds"], 2),
                    num(new_connection["posts_per_s"]),
                    "the same task with requests.post: a new connection per post (reference only)",
                ],
                ["ratio to it", "", "", num(ratio_new_connection, 2), "reference only"],
                [
                    "ceiling",
                    f"{ceiling['posts_received']}/{expected}",
                    num(ceiling["seconds"], 2),
                    num(ceiling["posts_per_s"]),
                    f"the keep-alive task on the service's worker design ({ceiling['pool']}):"
                    f" {num(ceiling_ratio, 2)} x baseline (reference only)",
                ],
                ["service / ceiling", "", "", num(share_of_ceiling, 2), "reference only"],
            ],
        )
    )
    ctx.out(
        f"  CPU ms per post, all processes of each side: service {service_cpu:.2f}, baseline "
        f"{baseline['cpu_ms_per_post']:.2f} -> CPU-efficiency ratio {num(cpu_ratio, 2)} "
        f"(new-connection baseline {new_connection['cpu_ms_per_post']:.2f}, ceiling "
        f"{ceiling['cpu_ms_per_post']:.2f}); "
        f"other engineers' CPU: {cpu_used['other_processes']} s during the service, "
        f"{baseline['other_processes_cpu_seconds']} s during the baseline"
    )
    ctx.out(
        "  service CPU ms per delivery: "
        + ", ".join(f"{k} {v}" for k, v in service["cpu_ms_per_delivery"].items())
        + f"; machine busy {cpu_used['machine_busy_share']:.0%},"
        f" other processes {cpu_used['other_processes']} s"
    )
    return result


def run_baseline(ctx: Context, posts: int, *, task: str, tag: str, ceiling: bool = False) -> dict:
    """Preload the bare ``task``'s queue, start its worker, time first to last receipt.

    The worker is Celery's prefork pool on its defaults, or with ``ceiling`` the service's
    processes, threads and broker settings (``Stack.start_ceiling_worker``).
    """
    from .baseline import QUEUE
    from .baseline import app as baseline_app

    baseline_app.conf.broker_url = ctx.config.redis_url
    body = (
        '{"id":"evt-0123456789abcdef","type":"sandbox.created","timestamp":'
        '"2025-12-19T10:30:00.000Z","data":{"sandbox_id":"sbx-1","organization_id":'
        '"org-0123456789abcde","status":"running","class":"small"}}'
    )
    url = ctx.receiver.url(tag, "ok", 0)
    ctx.receiver.reset(tag)
    started = time.time()
    with baseline_app.producer_or_acquire() as producer:
        for index in range(posts):
            baseline_app.send_task(
                task, args=[url, body, f"{tag}-{index}"], queue=QUEUE, producer=producer
            )
    preload = time.time() - started
    if ceiling:
        pool = ctx.stack.start_ceiling_worker()
    else:
        ctx.stack.start_baseline_worker()
        pool = f"prefork x{ctx.config.baseline_concurrency}"
    cpu = CpuMeter(ctx.stack)
    # The prefork children exist once the worker says ready: count from here, not startup.
    tree_start = cpu_seconds(process_tree(ctx.stack.pids("baseline")[0]))
    got = wait_receipts(ctx, tag, posts, timeout=min(3600, 120 + posts / 20))
    tree_cpu = cpu_seconds(process_tree(ctx.stack.pids("baseline")[0])) - tree_start
    cpu_used = cpu.stop()
    ctx.stack.procs.stop("baseline")
    records = ctx.receiver.records(tag)
    times = [r[0] for r in records]
    span = (max(times) - min(times)) if len(times) > 1 else None
    return {
        "posts_expected": posts,
        "posts_received": got,
        "preload_seconds": round(preload, 2),
        "seconds": round(span, 2) if span else None,
        "posts_per_s": round((len(times) - 1) / span, 1) if span else None,
        "task": task,
        "pool": pool,
        "worker_cpu_seconds": round(tree_cpu, 2),
        "redis_cpu_seconds": cpu_used["redis"],
        # The bare task's whole cost: its worker processes and the broker.
        "cpu_ms_per_post": round((tree_cpu + cpu_used["redis"]) * 1000 / max(got, 1), 3),
        "machine_busy_share": cpu_used["machine_busy_share"],
        "other_processes_cpu_seconds": round(cpu_used["other_processes"] - tree_cpu, 2),
        "measured": "drain of a preloaded queue, first to last receipt",
    }


# ---- 2. latency at constant arrival rates ------------------------------------------------


LEVELS = (0.25, 0.5, 0.8)


def _level_seconds(ctx: Context) -> float:
    return max(10.0, 30.0 * ctx.config.scale)


def scenario_2(ctx: Context) -> dict:
    """Ingest-to-receipt latency at 25/50/80% of scenario 1's rate (open loop)."""
    rate, source = delivery_rate(ctx)
    if not rate:
        raise RuntimeError(NO_RATE.format(scenario=2))
    tag = "s2"
    org_id, key = new_org(ctx, "bench-s2")
    paths = [f"/{tag}/ok/{i}" for i in range(ENDPOINTS_PER_ORG)]
    create_endpoints(ctx, key, [ctx.receiver.base + p for p in paths])
    levels = {}
    rows = []
    for share in LEVELS:
        ctx.out(f"  scenario 2: {share:.0%} of {rate:.1f}/s ({source})")
        level = latency_run(
            ctx, org_id, tag, dict.fromkeys(paths, True), rate * share, _level_seconds(ctx)
        )
        levels[f"{int(share * 100)}%"] = level
        lat = level["latency"]
        rows.append(
            [
                f"{share:.0%}",
                num(level["offered_deliveries_per_s"]),
                num(level["healthy_deliveries_per_s"]),
                f"{level['healthy_received']}/{level['healthy_expected']}",
                ms(lat["p50"]),
                ms(lat["p95"]),
                ms(lat["p99"]),
                ms(lat["max"]),
                ms(level["ingest_response_time"]["p99"]),
            ]
        )
        wait_queue_empty(ctx, 60)
    ctx.out(
        table(
            f"Scenario 2: ingest-to-receipt latency, open loop (rate source: {source}; "
            "target: p99 < 50 ms at 50%)",
            ["load", "offered/s", "done/s", "received", "p50", "p95", "p99", "max", "ingest p99"],
            rows,
        )
    )
    return {"rate": rate, "rate_source": source, "levels": levels}


# ---- 3. fan-out --------------------------------------------------------------------------


def fan_out_filter(index: int) -> dict:
    """A payload filter that make_event's events match, different for every endpoint.

    Five conditions of four kinds (one of, a case-insensitive state, a prefix, a time
    bound, a not-in naming the endpoint), so that no two endpoints share a compiled filter.
    """
    return {
        "filter": {
            "class": ["small", "medium"],
            "state": "STARTED",
            "id": {"$prefix": "sbx-"},
            "createdAt": {"$lt": "2100-01-01T00:00:00Z"},
            "organizationId": {"$nin": [f"org-not-{index}"]},
        }
    }


def fan_out_rounds(ctx: Context, tag: str, org_id: str, endpoints: int) -> list[dict]:
    """Three single events to the organization's endpoints: ingest answer and receipts."""
    rounds = []
    for index in range(3):
        before = ctx.receiver.count(tag)["ok"]
        sent = time.time()
        status, body, elapsed = ctx.api.request(
            "POST", INGEST, make_event(org_id, tag, index, ctx.run_id)
        )
        if status != 202:
            raise RuntimeError(f"ingest failed: {status} {body}")
        message_id = body["messages"][0]["id"]
        got = wait_receipts(ctx, tag, before + endpoints, timeout=120) - before
        arrivals = [r[0] for r in ctx.receiver.records(tag) if r[1] == message_id]
        rounds.append(
            {
                "ingest_response_s": elapsed,
                "received": got,
                "first_receipt_s": (min(arrivals) - sent) if arrivals else None,
                "last_receipt_s": (max(arrivals) - sent) if arrivals else None,
            }
        )
        wait_queue_empty(ctx, 30)
        time.sleep(1)
    return rounds


def scenario_3(ctx: Context) -> dict:
    """One event to 1,000 endpoints, then to 1,000 that each have a payload filter it
    matches: ingest response time and time to the last receipt."""
    endpoints = ctx.scaled(1000, 100)
    variants = {}
    for variant, tag, each in (("plain", "s3", None), ("filtered", "s3f", fan_out_filter)):
        org_id, key = new_org(ctx, f"bench-{tag}")
        started = time.time()
        urls = [ctx.receiver.url(tag, "ok", i) for i in range(endpoints)]
        create_endpoints(ctx, key, urls, each=each)
        setup = time.time() - started
        ctx.out(f"  scenario 3 ({variant}): {endpoints} endpoints created in {setup:.1f} s")
        variants[variant] = {
            "endpoint_setup_s": round(setup, 2),
            "rounds": fan_out_rounds(ctx, tag, org_id, endpoints),
        }
    ctx.out(
        table(
            f"Scenario 3: one event to {endpoints} endpoints, without and with a payload "
            "filter on each (target: ingest < 50 ms, last receipt < 5 s)",
            ["endpoints", "round", "ingest", "first receipt", "last receipt", "received"],
            [
                [
                    variant,
                    i + 1,
                    ms(r["ingest_response_s"]),
                    ms(r["first_receipt_s"]),
                    ms(r["last_receipt_s"]),
                    f"{r['received']}/{endpoints}",
                ]
                for variant, figures in variants.items()
                for i, r in enumerate(figures["rounds"])
            ],
        )
    )
    plain = variants["plain"]
    # The plain variant's figures stay at the top level, where earlier results files have them.
    return {"endpoints": endpoints, **plain, "filtered": variants["filtered"]}


# ---- 4. slow receivers -------------------------------------------------------------------


def scenario_4(ctx: Context) -> dict:
    """As scenario 2 at 50%, with 10% of the endpoints hanging until their 5 s timeout."""
    rate, source = delivery_rate(ctx)
    if not rate:
        raise RuntimeError(NO_RATE.format(scenario=4))
    s2 = ctx.results.get("scenarios", {}).get("2", {}).get("levels", {}).get("50%")
    seconds = _level_seconds(ctx)
    if s2 is None:
        ctx.out("  scenario 4: no scenario 2 in this run; measuring its 50% level first")
        org_id, key = new_org(ctx, "bench-s4-reference")
        paths = [f"/s4ref/ok/{i}" for i in range(ENDPOINTS_PER_ORG)]
        create_endpoints(ctx, key, [ctx.receiver.base + p for p in paths])
        s2 = latency_run(ctx, org_id, "s4ref", dict.fromkeys(paths, True), rate * 0.5, seconds)
        wait_queue_empty(ctx, 60)
    tag = "s4"
    hanging = max(1, ENDPOINTS_PER_ORG // 10)
    org_id, key = new_org(ctx, "bench-s4")
    paths = {f"/{tag}/hang/{i}": False for i in range(hanging)}
    paths.update({f"/{tag}/ok/{i}": True for i in range(hanging, ENDPOINTS_PER_ORG)})
    hang_ids = create_endpoints(
        ctx, key, [ctx.receiver.base + p for p, ok in paths.items() if not ok], timeout_seconds=5
    )
    create_endpoints(ctx, key, [ctx.receiver.base + p for p, ok in paths.items() if ok])
    ctx.out(f"  scenario 4: {hanging}/{ENDPOINTS_PER_ORG} endpoints hang, 50% of {rate:.1f}/s")
    level = latency_run(ctx, org_id, tag, paths, rate * 0.5, seconds)
    # Stop the hung endpoint's retries from running into the next scenario.
    for endpoint_id in hang_ids:
        delete_endpoint(ctx, key, endpoint_id)
    wait_queue_empty(ctx, 90)
    base_rate = s2["healthy_deliveries_per_s"] or 0
    # Per healthy endpoint: scenario 4 has 9 healthy endpoints to scenario 2's 10.
    healthy_share = (ENDPOINTS_PER_ORG - hanging) / ENDPOINTS_PER_ORG
    throughput_ratio = (
        level["healthy_deliveries_per_s"] / (base_rate * healthy_share)
        if base_rate and level["healthy_deliveries_per_s"]
        else None
    )
    p99_ratio = (
        level["latency"]["p99"] / s2["latency"]["p99"]
        if level["latency"]["p99"] and s2["latency"]["p99"]
        else None
    )
    ctx.out(
        table(
            "Scenario 4: slow receivers (target: healthy throughput >= 90% of scenario 2, "
            "p99 <= 2 x scenario 2)",
            ["", "healthy done/s", "received", "p50", "p99", "max", "hung requests"],
            [
                [
                    "scenario 2 @50%",
                    num(base_rate),
                    f"{s2['healthy_received']}/{s2['healthy_expected']}",
                    ms(s2["latency"]["p50"]),
                    ms(s2["latency"]["p99"]),
                    ms(s2["latency"]["max"]),
                    "-",
                ],
                [
                    "with 10% hanging",
                    num(level["healthy_deliveries_per_s"]),
                    f"{level['healthy_received']}/{level['healthy_expected']}",
                    ms(level["latency"]["p50"]),
                    ms(level["latency"]["p99"]),
                    ms(level["latency"]["max"]),
                    level["hung_requests"],
                ],
                [
                    "ratio",
                    num(throughput_ratio, 2) + " (per endpoint)",
                    "",
                    "",
                    num(p99_ratio, 2),
                    "",
                    "",
                ],
            ],
        )
    )
    return {
        "rate": rate,
        "rate_source": source,
        "hanging_endpoints": hanging,
        "reference": s2,
        "level": level,
        "healthy_throughput_ratio": round(throughput_ratio, 3) if throughput_ratio else None,
        "p99_ratio": round(p99_ratio, 3) if p99_ratio else None,
    }


# ---- 5. retry storm ----------------------------------------------------------------------


class SchedulePoller:
    """Polls the deliveries' next_attempt_at, to know when each retry was due.

    A try's due time is overwritten when the try is recorded, and tries of one delivery
    are at least the first backoff (5 s) apart, so a poll every 2 s sees every one.
    """

    def __init__(self, stack: Stack, endpoint_id: str, interval: float = 2.0) -> None:
        self.stack = stack
        self.endpoint_id = endpoint_id
        self.interval = interval
        self.due: dict[tuple[str, int], datetime] = {}
        self.polls = 0
        self.poll_seconds = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="schedule-poller", daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        started = time.monotonic()
        rows = self.stack.rows(
            "SELECT id, attempt_count, next_attempt_at FROM deliveries"
            " WHERE endpoint_id = :e AND status = 'pending' AND attempt_count > 0",
            e=self.endpoint_id,
        )
        for delivery_id, attempts, due in rows:
            if due is not None:
                self.due.setdefault((delivery_id, attempts + 1), _aware(due))
        self.polls += 1
        self.poll_seconds += time.monotonic() - started

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self._poll()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=30)


def scenario_5(ctx: Context) -> dict:
    """Deliveries to an endpoint that fails for the first 60 s: drain, memory, lateness."""
    tag = "s5"
    count = ctx.scaled(20000, 200)
    fail_seconds = 60.0 if ctx.config.scale >= 1 else max(15.0, 60.0 * ctx.config.scale)
    org_id, key = new_org(ctx, "bench-s5")
    (endpoint_id,) = create_endpoints(ctx, key, [ctx.receiver.url(tag, "flaky", 0)], max_retries=10)
    ctx.out(
        f"  scenario 5: {count} deliveries, endpoint fails for {fail_seconds:.0f} s, retry "
        f"schedule {ctx.config.retry_schedule}"
    )
    ctx.sampler.reset()
    rss_start = ctx.sampler.sample()
    poller = SchedulePoller(ctx.stack, endpoint_id)
    cpu = CpuMeter(ctx.stack)
    start = time.time()
    recovers = start + fail_seconds
    ctx.receiver.fail_until(tag, recovers)
    feed = ingest_batches(ctx, org_id, tag, count)
    got = wait_receipts(ctx, tag, count, timeout=min(3600, fail_seconds + 300 + count / 20))
    poller.stop()
    cpu_used = cpu.stop()
    records = ctx.receiver.records(tag)
    ok_times = [r[0] for r in records if r[3] == 200]
    drained = (max(ok_times) - start) if ok_times else None
    attempts = ctx.stack.rows(
        "SELECT delivery_id, try_number, created_at, duration_ms FROM attempts"
        " WHERE endpoint_id = :e AND try_number > 1",
        e=endpoint_id,
    )
    late_all: list[float] = []
    late_after: list[float] = []
    unknown = 0
    for delivery_id, try_number, created_at, duration_ms in attempts:
        due = poller.due.get((delivery_id, try_number))
        if due is None:
            unknown += 1
            continue
        began = _aware(created_at).timestamp() - (duration_ms or 0) / 1000
        lateness = began - due.timestamp()
        late_all.append(lateness)
        if due.timestamp() >= recovers:
            late_after.append(lateness)
    total_attempts = ctx.stack.scalar(
        "SELECT count(*) FROM attempts WHERE endpoint_id = :e", e=endpoint_id
    )
    over_1s = sum(1 for v in late_after if v > 1.0)
    result = {
        "deliveries": count,
        "fail_seconds": fail_seconds,
        "retry_schedule": ctx.config.retry_schedule,
        "delivered": got,
        "attempts": total_attempts,
        "receiver_requests": len(records),
        "ingest_seconds": round(feed["last_response"] - feed["first_send"], 2),
        "drain_seconds": round(drained, 2) if drained else None,
        "drain_after_recovery_seconds": round(drained - fail_seconds, 2) if drained else None,
        "peak_worker_rss_mb": round(ctx.sampler.peak / 2**20, 1),
        "worker_rss_fresh_mb": round(rss_start / 2**20, 1),
        "retry_lateness_all": percentiles(late_all),
        "retry_lateness_after_recovery": percentiles(late_after),
        "retries_after_recovery_over_1s": over_1s,
        "retries_without_known_schedule": unknown,
        "schedule_polls": poller.polls,
        "schedule_poll_seconds": round(poller.poll_seconds, 2),
        "cpu_seconds": cpu_used,
    }
    la, lr = result["retry_lateness_all"], result["retry_lateness_after_recovery"]
    ctx.out(
        table(
            "Scenario 5: retry storm (target: peak worker RSS < 300 MB, retries <= 1 s late "
            "once the endpoint is back)",
            ["", "value"],
            [
                ["delivered", f"{got}/{count} ({total_attempts} attempts)"],
                ["drain (from first ingest)", f"{num(drained, 1)} s"],
                ["drain after recovery", f"{num(result['drain_after_recovery_seconds'], 1)} s"],
                [
                    "peak worker RSS",
                    f"{result['peak_worker_rss_mb']} MB (fresh worker: "
                    f"{result['worker_rss_fresh_mb']} MB)",
                ],
                [
                    "retry lateness, all",
                    f"p50 {ms(la['p50'])}  p99 {ms(la['p99'])}  max {ms(la['max'])} (n={la['n']})",
                ],
                [
                    "retry lateness, due after recovery",
                    f"p50 {ms(lr['p50'])}  p99 {ms(lr['p99'])}  max {ms(lr['max'])} "
                    f"(n={lr['n']}, {over_1s} over 1 s)",
                ],
                ["retries with unknown schedule", unknown],
            ],
        )
    )
    wait_queue_empty(ctx, 60)
    return result


# ---- 6. ingest api -----------------------------------------------------------------------


def closed_loop(
    client: Http,
    make_body: Callable[[int], object],
    threads: int,
    seconds: float,
    per_request: int,
    max_requests: int,
) -> dict:
    """threads keep-alive clients posting back to back for seconds."""
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(max_requests))
    end = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < end:
            try:
                index = next(counter)
            except StopIteration:
                return
            status, body, elapsed = client.request("POST", INGEST, make_body(index))
            with lock:
                if status == 202:
                    times.append(elapsed)
                else:
                    errors.append(f"{status} {str(body)[:200]}")

    cpu_before = time.process_time()
    started = time.monotonic()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.monotonic() - started
    return {
        "threads": threads,
        "requests": len(times),
        "events": len(times) * per_request,
        "seconds": round(wall, 2),
        "events_per_s": round(len(times) * per_request / wall, 1),
        "requests_per_s": round(len(times) / wall, 1),
        "response_time": percentiles(times),
        "errors": len(errors),
        "error_samples": errors[:3],
        "client_cpu_seconds": round(time.process_time() - cpu_before, 2),
    }


def scenario_6(ctx: Context) -> dict:
    """Events/s accepted by the ingest, one per request and in arrays of 100; p99."""
    tag = "s6"
    seconds = max(5.0, 20.0 * ctx.config.scale)
    # No endpoints: this measures the ingest (and its fan-out tasks), not deliveries.
    org_id, _ = new_org(ctx, "bench-s6")
    api = Http(f"http://127.0.0.1:{ctx.api.port}", ctx.api.headers)
    run = f"{ctx.run_id}s"
    modes = {}
    cpu = CpuMeter(ctx.stack)
    modes["single"] = closed_loop(
        api, lambda i: make_event(org_id, tag, i, run), 16, seconds, 1, 200_000
    )
    modes["single"]["cpu_seconds"] = cpu.stop()
    wait_queue_empty(ctx, 60)
    cpu = CpuMeter(ctx.stack)
    modes["array"] = closed_loop(
        api,
        lambda i: [make_event(org_id, tag, i * BATCH + j, run + "a") for j in range(BATCH)],
        4,
        seconds,
        BATCH,
        20_000,
    )
    modes["array"]["cpu_seconds"] = cpu.stop()
    wait_queue_empty(ctx, 60)
    bare_client = ctx.stack.start_bare_wsgi()
    modes["bare_single"] = closed_loop(bare_client, lambda i: {"i": i}, 16, seconds, 1, 200_000)
    modes["bare_array"] = closed_loop(
        bare_client,
        lambda i: [make_event(org_id, tag, i * BATCH + j, run) for j in range(BATCH)],
        4,
        seconds,
        BATCH,
        20_000,
    )
    ctx.stack.procs.stop("bare_wsgi")
    rows = []
    for name, label, target in (
        ("single", "api, 1 event/request", ">= 500"),
        ("array", f"api, {BATCH} events/request", ">= 5,000"),
        ("bare_single", "bare WSGI, same gunicorn, 1/request", ""),
        ("bare_array", f"bare WSGI, same gunicorn, {BATCH}/request", ""),
    ):
        mode = modes[name]
        rt = mode["response_time"]
        rows.append(
            [
                label,
                num(mode["events_per_s"]),
                num(mode["requests_per_s"]),
                ms(rt["p50"]),
                ms(rt["p99"]),
                mode["errors"],
                f"{mode['client_cpu_seconds']} s",
                target,
            ]
        )
    ratio_single = (
        modes["single"]["requests_per_s"] / modes["bare_single"]["requests_per_s"]
        if modes["bare_single"]["requests_per_s"]
        else None
    )
    ctx.out(
        table(
            "Scenario 6: ingest API (closed loop, keep-alive clients)",
            ["mode", "events/s", "requests/s", "p50", "p99", "errors", "client CPU", "target"],
            rows,
        )
    )
    ctx.out(f"  api single-event requests/s vs bare WSGI: {num(ratio_single, 3)}")
    for name in ("single", "array"):
        used = modes[name]["cpu_seconds"]
        events = max(modes[name]["events"], 1)
        ctx.out(
            f"  CPU ms per event ({name}): api {used['api'] * 1000 / events:.2f}, workers "
            f"(fan-out tasks) {used['workers'] * 1000 / events:.2f}, postgres "
            f"{used['postgres'] * 1000 / events:.2f}; other processes {used['other_processes']} s"
        )
    return {"seconds": seconds, "modes": modes, "single_vs_bare": ratio_single}


# Scenarios that start on fresh worker processes: a worker's RSS never shrinks, so earlier
# scenarios' high-water mark would hide this one's peak.
FRESH_WORKERS = {5}

SCENARIOS: dict[int, Callable[[Context], dict]] = {
    1: scenario_1,
    2: scenario_2,
    3: scenario_3,
    4: scenario_4,
    5: scenario_5,
    6: scenario_6,
}


def _register_later_scenarios() -> None:
    # Modules of their own (this one is long enough); they import this one's helpers.
    from .ordered import scenario_8

    SCENARIOS[8] = scenario_8


_register_later_scenarios()
