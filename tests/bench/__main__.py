"""python -m tests.bench: run the benchmark and write bench-results/<time>.json.

Starts a scratch PostgreSQL database (webhooks_bench, dropped afterwards), uses one
Redis db (flushed before and after), and starts the receiver, the api (gunicorn), the
workers, beat and the baselines on loopback; stops them all however the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from . import pyspy
from .harness import (
    ROOT,
    BenchConfig,
    RssSampler,
    Stack,
    config_dict,
    machine_info,
    source_digest,
    tuning,
    versions,
    worker_processes,
)
from .noisy import scenario_7
from .report import num, write_json
from .scenarios import FRESH_WORKERS, PREVIOUS_RATE_MAX_AGE_S, Context
from .scenarios import SCENARIOS as _SCENARIOS

# Scenario 7 (the noisy neighbour) lives in its own module.
SCENARIOS = {**_SCENARIOS, 7: scenario_7}

# The run's defaults live in BenchConfig; the command line only overrides them.
_DEFAULTS = BenchConfig(scenarios=sorted(SCENARIOS))


def parse_args(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Benchmark the webhook service against in-run baselines.",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(map(str, _DEFAULTS.scenarios)),
        help="comma-separated scenario numbers (1-6; 7: noisy neighbour; 8: ordered endpoints)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=_DEFAULTS.scale,
        help="multiply every count and duration (0.1 for a quick run; minimums apply)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=_DEFAULTS.rounds,
        help="run scenario 1 this many times and print the median and lowest ratio",
    )
    # Tuning: by default the workers are the Procfile's `worker:` line exactly as shipped.
    tuning_group = parser.add_argument_group(
        "tuning (each one given labels the run TUNED: the workers are then not as shipped)"
    )
    tuning_group.add_argument(
        "--workers",
        type=int,
        help="delivery processes (WEBHOOKS_WORKER_PROCESSES; shipped: one per core)",
    )
    tuning_group.add_argument(
        "--concurrency",
        type=int,
        help="most threads per delivery process (WEBHOOKS_WORKER_CONCURRENCY; shipped: 256)",
    )
    tuning_group.add_argument(
        "--core-threads",
        type=int,
        help="threads a process runs while posts are quick (WEBHOOKS_WORKER_CORE_THREADS)",
    )
    tuning_group.add_argument(
        "--worker-nice",
        type=int,
        help="niceness of the workers in place of the Procfile's `nice -n 10`",
    )
    parser.add_argument(
        "--api-workers", type=int, default=_DEFAULTS.api_workers, help="gunicorn worker processes"
    )
    parser.add_argument(
        "--api-threads", type=int, default=_DEFAULTS.api_threads, help="gunicorn threads per worker"
    )
    parser.add_argument("--loglevel", default=_DEFAULTS.loglevel, help="worker and beat log level")
    parser.add_argument(
        "--database-url",
        default=_DEFAULTS.database_url,
        help="scratch database (dropped and recreated!)",
    )
    parser.add_argument(
        "--redis-url",
        default=_DEFAULTS.redis_url,
        help="Redis db for the run (flushed!): the tests use dbs 1-15, so 0 is the default",
    )
    parser.add_argument(
        "--retry-schedule",
        default=_DEFAULTS.retry_schedule,
        help="WEBHOOKS_RETRY_SCHEDULE of the run (short, so the storm fits in minutes)",
    )
    parser.add_argument(
        "--rate", type=float, help="deliveries/s for scenarios 2 and 4 when 1 is not run"
    )
    parser.add_argument(
        "--py-spy", action="store_true", help="sample the api and workers with py-spy"
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    scenarios = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    if not scenarios or any(s not in SCENARIOS for s in scenarios):
        parser.error(f"--scenarios takes numbers among {sorted(SCENARIOS)}")
    if not 0 < args.scale <= 10:
        parser.error("--scale must be in (0, 10]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in [1, 20]")
    if not args.database_url.rsplit("/", 1)[-1].startswith("webhooks_bench"):
        parser.error("--database-url must name a database starting with webhooks_bench")
    if args.py_spy and not pyspy.available():
        parser.error("--py-spy needs py-spy on the PATH: pip install -e '.[bench]'")
    return BenchConfig(
        scenarios=scenarios,
        scale=args.scale,
        rounds=args.rounds,
        workers=args.workers,
        concurrency=args.concurrency,
        core_threads=args.core_threads,
        worker_nice=args.worker_nice,
        api_workers=args.api_workers,
        api_threads=args.api_threads,
        loglevel=args.loglevel,
        database_url=args.database_url,
        redis_url=args.redis_url,
        retry_schedule=args.retry_schedule,
        rate=args.rate,
        py_spy=args.py_spy,
        keep_db=args.keep_db,
    )


def _previous_rate(results_dir: Path, digest: str, tuned: dict, now: float) -> float | None:
    """Scenario 1's deliveries/s from the newest results file that can stand in for it.

    Only a run of the same code and worker settings, written in the last
    PREVIOUS_RATE_MAX_AGE_S seconds, counts; otherwise scenarios 2 and 4 need scenario 1
    in the same run or --rate.
    """
    for path in sorted(results_dir.glob("*.json"), reverse=True):
        if now - path.stat().st_mtime > PREVIOUS_RATE_MAX_AGE_S:
            continue
        try:
            data = json.loads(path.read_text())
            if data.get("source_digest") != digest or data.get("workers_tuned") != tuned:
                continue
            return float(data["scenarios"]["1"]["service"]["deliveries_per_s"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _over_rounds(rounds: list[dict], planned: int, out) -> dict:
    """Scenario 1's result over the rounds so far: the median round, with every round's ratio.

    Its ``service`` and ``ratio`` are the median round's, so that scenarios 2 and 4 run
    at a rate the machine reaches in this run; after the last round the median and the
    lowest ratio are printed against the target.
    """
    measured = sorted((r for r in rounds if r.get("ratio")), key=lambda r: r["ratio"])
    if not measured:
        return {"rounds": rounds}
    ratios = [r["ratio"] for r in measured]
    median = statistics.median(ratios)
    # The service's share of the bare task on its own worker design: how far trimming could go.
    shares = [r["service_share_of_ceiling"] for r in measured if r.get("service_share_of_ceiling")]
    share_median = statistics.median(shares) if shares else None
    result = {
        **measured[(len(measured) - 1) // 2],
        "rounds": rounds,
        "ratios": [r.get("ratio") for r in rounds],
        "ratio_median": round(median, 3),
        "ratio_lowest": ratios[0],
        "share_of_ceiling_median": round(share_median, 3) if share_median else None,
    }
    if len(rounds) == planned:
        out(
            f"\nscenario 1 over {planned} rounds: ratios "
            + ", ".join(num(r, 2) for r in result["ratios"])
            + f"; median {median:.2f}, lowest {ratios[0]:.2f} "
            "(target: median >= 1.50, none under 1.30); service / ceiling: median "
            + num(share_median, 2)
        )
    return result


def _receiver_capacity(stack: Stack) -> dict:
    """Requests/s the receiver answers to a separate load process (a lower bound)."""
    import subprocess

    out = {}
    for mode, extra in (("keepalive_64_connections", []), ("new_connection_each", ["--new-conn"])):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.bench.receiver",
                "load",
                "--port",
                str(stack.receiver.port),
                "--seconds",
                "2",
                "--connections",
                "64" if not extra else "16",
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out[mode] = round(json.loads(proc.stdout)["requests_per_second"], 0)
    stack.receiver.reset("cap")
    return out


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = ROOT / "bench-results"
    run_dir = results_dir / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{stamp}.json"
    log_path = run_dir / "summary.txt"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed at the end of main

    def out(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    # SIGTERM ends the run like Ctrl-C: through the finally below.
    def _terminate(*_args) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    # Started in the background by a shell, SIGINT may arrive ignored: make Ctrl-C count.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    digest = source_digest()
    tuned = tuning(config)
    results: dict = {
        "started_at": stamp,
        "machine": machine_info(),
        "config": config_dict(config),
        "workers_tuned": tuned,
        "source_digest": digest,
        "scenarios": {},
        "previous_rate": _previous_rate(results_dir, digest, tuned, time.time()),
        "notes": [
            "The machine is shared: other processes' CPU is reported per scenario as "
            "cpu_seconds.other_processes; read the figures with their in-run baselines.",
        ],
    }
    stack = Stack(config, run_dir)
    sampler: RssSampler | None = None
    recorder = pyspy.Recorder(run_dir) if config.py_spy else None
    status = 0
    try:
        results["versions"] = versions(config.database_url, config.redis_url)
        machine = results["machine"]
        out(
            f"machine: {machine['cores']} cores ({machine['cpu_model']}), "
            f"{machine['memory_gib']} GiB, load {', '.join(f'{x:.2f}' for x in machine['loadavg'])}"
        )
        out("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
        workers = (
            "TUNED workers (" + ", ".join(f"{k} {v}" for k, v in tuned.items()) + ")"
            if tuned
            else "workers as shipped"
        )
        out(
            f"config: scale {config.scale}, {workers}: `{stack.worker_command()}` "
            f"({worker_processes(config)} delivery process(es)), api gunicorn gthread "
            f"{config.api_workers} x "
            f"{config.api_threads}, loglevel {config.loglevel}, retry schedule "
            f"{config.retry_schedule}, redis {config.redis_url}, baseline prefork x "
            f"{config.baseline_concurrency}; product source digest {results['source_digest']}"
        )
        out(f"results: {json_path}  logs: {run_dir}")
        stack.start()
        sampler = RssSampler(stack.worker_pids)
        results["worker_rss_idle_mb"] = round(sampler.sample() / 2**20, 1)
        results["receiver_capacity_rps"] = _receiver_capacity(stack)
        cap = results["receiver_capacity_rps"]
        out(
            "receiver capacity (lower bound, one Python load process): "
            f"{num(cap['keepalive_64_connections'], 0)} req/s keep-alive, "
            f"{num(cap['new_connection_each'], 0)} req/s new connection each"
        )
        write_json(json_path, results)
        ctx = Context(stack, config, stack.receiver, sampler, results, out)
        rounds: list[dict] = []
        plan = [
            (number, index)
            for number in config.scenarios
            for index in range(config.rounds if number == 1 else 1)
        ]
        for number, index in plan:
            out("")
            if number == 1 and config.rounds > 1:
                out(f"scenario 1, round {index + 1} of {config.rounds}")
            stack.truncate()
            if number in FRESH_WORKERS:
                stack.restart_workers()
                time.sleep(2)
            sampler.reset()
            if recorder is not None:
                targets = {"api": stack.pids("api")[0]}
                targets.update({f"worker{i}": p for i, p in enumerate(stack.worker_pids())})
                recorder.start(f"s{number}" + (f"r{index + 1}" if index else ""), targets)
            started = time.monotonic()
            try:
                result = SCENARIOS[number](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one scenario's failure is reported
                out(f"scenario {number} failed: {exc!r}")
                result = {"error": repr(exc), "traceback": traceback.format_exc()}
                status = 1
            result["wall_seconds"] = round(time.monotonic() - started, 1)
            result["peak_worker_rss_mb_scenario"] = round(sampler.peak / 2**20, 1)
            if recorder is not None:
                result["py_spy"] = recorder.stop()
                for name, summary in result["py_spy"].items():
                    buckets = ", ".join(
                        f"{k} {v:.0%}" for k, v in list(summary["buckets"].items())[:8]
                    )
                    out(f"  py-spy {name} ({summary['samples']} samples): {buckets}")
            if number == 1 and config.rounds > 1:
                rounds.append(result)
                result = _over_rounds(rounds, config.rounds, out)
            results["scenarios"][str(number)] = result
            write_json(json_path, results)
    except KeyboardInterrupt:
        out("interrupted; stopping everything")
        results["interrupted"] = True
        status = 130
    finally:
        if recorder is not None and recorder.running:
            recorder.stop()
        if sampler is not None:
            sampler.stop()
        results["finished_at"] = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        results["machine_after"] = {"loadavg": os.getloadavg()}
        stack.stop()
        write_json(json_path, results)
        out(f"\nwrote {json_path}")
        log_file.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
