"""Structured logs: JSON lines with a delivery's ids on every line about it, no secrets."""

from __future__ import annotations

import io
import json
import logging

from shared import log_context, logs, queue
from tests.conftest import ADMIN_TOKEN, ENCRYPTION_KEY, PLATFORM


def _capture(log_format: str, process: str = "worker") -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logs.make_handler(log_format, process, stream)
    logging.getLogger().addHandler(handler)
    return handler, stream


def test_json_line_carries_the_ids_and_scrubs_secrets():
    handler, stream = _capture("json")
    try:
        logging.getLogger("webhooks.test").warning(
            "posting with whsec_c2VjcmV0c2VjcmV0c2VjcmV0 and whk_live_abcDEF123-_x, "
            "Authorization: Bearer %s, key %s, db postgresql://u:hunter2@db/x",
            ADMIN_TOKEN,
            ENCRYPTION_KEY,
            extra={"delivery_id": "whd-1", "endpoint_id": "whk-1"},
        )
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["level"] == "warning"
    assert line["logger"] == "webhooks.test"
    assert line["process"] == "worker"
    assert line["time"].endswith("Z")
    assert line["delivery_id"] == "whd-1" and line["endpoint_id"] == "whk-1"
    for secret in ("c2VjcmV0c2VjcmV0", "abcDEF123", ADMIN_TOKEN, ENCRYPTION_KEY, "hunter2"):
        assert secret not in line["message"]
    assert "whsec_[redacted]" in line["message"]


def test_bound_context_and_known_deliveries_fill_in_missing_ids():
    handler, stream = _capture("json")
    log_context.remember_delivery(
        "whd-known", message_id="evt-1", endpoint_id="whk-1", organization_id="org-1"
    )
    log = logging.getLogger("webhooks.test")
    try:
        log.warning("only the delivery", extra={"delivery_id": "whd-known"})
        with log_context.bind_context(task_id="t-1"):
            log.warning("inside a task")
        log.warning("outside")
    finally:
        logging.getLogger().removeHandler(handler)
    first, inside, outside = (json.loads(x) for x in stream.getvalue().splitlines())
    assert {k: first[k] for k in log_context.CONTEXT_FIELDS if k in first} == {
        "organization_id": "org-1",
        "endpoint_id": "whk-1",
        "message_id": "evt-1",
        "delivery_id": "whd-known",
    }
    assert inside["task_id"] == "t-1"
    assert "task_id" not in outside


def test_text_lines_show_ids_and_scrub_secrets():
    handler, stream = _capture("text")
    try:
        logging.getLogger("webhooks.test").warning(
            "secret whsec_c2VjcmV0c2VjcmV0", extra={"delivery_id": "whd-2"}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "delivery_id=whd-2" in text
    assert "c2VjcmV0" not in text


def test_every_worker_line_about_a_delivery_names_its_message_endpoint_and_org(
    client, org, receiver
):
    from webhooks_worker import celery_app, tasks

    resp = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.stopped"]},
        headers=org.headers,
    )
    endpoint_id = resp.json["data"]["endpoint_id"]
    # Keep the tasks off the broker, so that this process runs them (through Celery's
    # tracer, signals included) instead of the session's worker.
    queue.configure(None)
    handler, stream = _capture("json")
    try:
        resp = client.post(
            "/api/internal/events",
            json={
                "event": "sandbox.state.updated",
                "organizationId": org.id,
                "id": "sbx-1",
                "oldState": "started",
                "newState": "stopped",
            },
            headers=PLATFORM,
        )
        message_id = resp.json["messages"][0]["id"]
        tasks.fanout.apply(args=[[message_id]])
        from sqlalchemy import select

        from shared.db import session_scope
        from shared.models import Delivery

        with session_scope() as session:
            delivery_id = session.scalars(
                select(Delivery.id).where(Delivery.message_id == message_id)
            ).one()
        # A fresh process would not have seen the row yet: forget it here too.
        log_context._delivery_ids = log_context._DeliveryIds()
        result = tasks.deliver.apply(args=[delivery_id, 1])
        assert result.get() == "delivered"
    finally:
        logging.getLogger().removeHandler(handler)
        queue.configure(celery_app._send)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    about = [line for line in lines if line.get("delivery_id") == delivery_id]
    assert any("attempt 1: success 200" in line["message"] for line in about), lines
    for line in about:
        assert line["message_id"] == message_id, line
        assert line["endpoint_id"] == endpoint_id, line
        assert line["organization_id"] == org.id, line
        assert line["task_name"] == "webhooks.deliver", line


def test_background_lines_keep_their_order_ids_and_arguments():
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure_logging("json", process="worker", stream=stream, background=True)
    log = logging.getLogger("webhooks.test")
    arguments = {"n": 1}
    try:
        with log_context.bind_context(task_id="t-bg", delivery_id="whd-bg"):
            for n in range(200):
                log.warning("line %d of %s", n, arguments)
        arguments["n"] = 2  # changed after logging: the line shows what was logged
        log.warning("outside")
        try:
            raise ValueError("boom whsec_c2VjcmV0c2VjcmV0")
        except ValueError:
            log.exception("failed")
    finally:
        logs.stop_background()  # writes what is queued, in order
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines[:200]] == [
        f"line {n} of {{'n': 1}}" for n in range(200)
    ]
    for line in lines[:200]:
        assert line["task_id"] == "t-bg" and line["delivery_id"] == "whd-bg"
    assert lines[200]["message"] == "outside" and "task_id" not in lines[200]
    assert "ValueError: boom" in lines[201]["exception"]
    assert "c2VjcmV0" not in lines[201]["exception"]


def test_a_forked_child_writes_its_background_lines_itself(tmp_path):
    import os

    path = tmp_path / "log.jsonl"
    root = logging.getLogger()
    level = root.level
    with path.open("w", buffering=1) as stream:
        handler = logs.configure_logging("json", process="worker", stream=stream, background=True)
        try:
            pid = os.fork()
            if pid == 0:  # the child: its parent's writer thread did not come along
                try:
                    logging.getLogger("webhooks.test").warning("from the child")
                    logs.stop_background()
                finally:
                    os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
            logging.getLogger("webhooks.test").warning("from the parent")
        finally:
            logs.stop_background()
            root.removeHandler(handler)
            root.setLevel(level)
    messages = [json.loads(x)["message"] for x in path.read_text().splitlines()]
    assert messages == ["from the child", "from the parent"]
