"""The in-run baselines: a bare Celery task and a bare WSGI app.

``app`` is the bare Celery app of scenario 1's baselines, on Celery's defaults (prefork
pool, early ack, prefetch multiplier 4) and its own queue on the benchmark's Redis. Run
by the benchmark as ``celery -A tests.bench.baseline worker --pool prefork --concurrency
<cores>``. It has two tasks that do one unsigned POST and nothing else:

- ``TASK`` (``bench.post``): through one ``requests.Session`` per worker process, so
  connections to the receiver are kept alive, as anyone writing this task would do.
  Scenario 1's ratio is computed against it.
- ``NEW_CONNECTION_TASK`` (``bench.post_new_connection``): ``requests.post``, a new
  connection for every post; shown on a second line for reference.

With ``BENCH_BASELINE_SERVICE_BROKER`` set, the app reads and acknowledges tasks as the
service's workers do (its Redis transport, which reads several tasks per round trip, no
emulated acknowledgements, late acks, a prefetch multiplier of 1). Run under the thread
pool with the service's process and thread counts, the keep-alive task then shows the
most this worker design can deliver on the machine: a task that does nothing but the post
(scenario 1's "ceiling" line, reference only).

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
NEW_CONNECTION_TASK = "bench.post_new_connection"
HEADERS = {"content-type": "application/json"}

SERVICE_BROKER = "BENCH_BASELINE_SERVICE_BROKER"

app = Celery("bench_baseline", broker=os.environ.get("BENCH_BASELINE_BROKER_URL"))
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
if os.environ.get(SERVICE_BROKER):
    from webhooks_worker import broker

    app.conf.update(
        broker_transport=broker.TRANSPORT,
        broker_transport_options=broker.transport_options(socket_timeout=3.0),
        # As webhooks_worker.celery_app sets them.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
    )

# This process's session; None in the prefork parent, so each child opens its own.
_session: requests.Session | None = None


def _http() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
    return _session


@app.task(name=TASK)
def post(url: str, body: str, webhook_id: str) -> int:
    """One unsigned POST on the process's keep-alive session; nothing recorded."""
    response = _http().post(
        url, data=body.encode(), headers={**HEADERS, "webhook-id": webhook_id}, timeout=30
    )
    return response.status_code


@app.task(name=NEW_CONNECTION_TASK)
def post_new_connection(url: str, body: str, webhook_id: str) -> int:
    """One unsigned POST on a new connection (``requests.post``); nothing recorded."""
    response = requests.post(
        url, data=body.encode(), headers={**HEADERS, "webhook-id": webhook_id}, timeout=30
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
