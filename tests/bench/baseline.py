"""The in-run baselines: a bare Celery task and a bare WSGI app.

``app`` is the bare Celery app of scenario 1's baseline: one task that does one unsigned
``requests.post`` (a new connection each time, as ``requests.post`` does) and nothing
else, on Celery's defaults (prefork pool, early ack, prefetch multiplier 4) and its own
queue on the benchmark's Redis. Run by the benchmark as
``celery -A tests.bench.baseline worker --pool prefork --concurrency <cores>``.

``wsgi_app`` is the bare WSGI app of scenario 6's baseline: it reads the body and answers
202, under the same gunicorn settings as the api, so the ingest figures can be read
against what gunicorn and the client alone reach on this machine.
"""

from __future__ import annotations

import os

import requests
from celery import Celery

QUEUE = "bench_baseline"
TASK = "bench.post"

app = Celery("bench_baseline", broker=os.environ.get("BENCH_BASELINE_BROKER_URL"))
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)


@app.task(name=TASK)
def post(url: str, body: str, webhook_id: str) -> int:
    """One unsigned POST; nothing recorded."""
    response = requests.post(
        url,
        data=body.encode(),
        headers={"content-type": "application/json", "webhook-id": webhook_id},
        timeout=30,
    )
    return response.status_code


_ACCEPTED = b'{"messages":[]}'


def wsgi_app(environ, start_response):
    """Read the body, answer 202: the floor under any real ingest route."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response(
        "202 ACCEPTED",
        [("Content-Type", "application/json"), ("Content-Length", str(len(_ACCEPTED)))],
    )
    return [_ACCEPTED]
