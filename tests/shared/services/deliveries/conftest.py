"""Deliveries made with no broker, for tests that drive claims and writes themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared import queue
from shared.db import get_sessionmaker, make_engine, postgres_engine, session_scope
from shared.migrate import upgrade
from tests.support.unqueued import accept_without_broker


def create_endpoint(client, org, url: str) -> str:
    resp = client.post(
        "/v1/webhooks", json={"url": url, "event_types": ["sandbox.stopped"]}, headers=org.headers
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]["endpoint_id"]


def set_columns(model, row_id: str, **values) -> None:
    with session_scope() as session:
        session.execute(update(model).where(model.id == row_id).values(**values))


@pytest.fixture
def pending(client, org, receiver) -> tuple[str, str]:
    """A due delivery of try 1 to the receiver, never handed to the broker: (delivery, endpoint)."""
    endpoint_id = create_endpoint(client, org, receiver.url)
    return accept_without_broker(org.id), endpoint_id


@pytest.fixture
def engine():
    found = postgres_engine(get_sessionmaker())
    assert found is not None
    return found


@pytest.fixture
def no_broker() -> Iterator[None]:
    """Keep retries out of the broker: these tests drive the tries themselves."""
    sender = queue._sender
    queue.configure(None)
    yield
    queue.configure(sender)


@pytest.fixture(scope="module")
def sqlite_factory(tmp_path_factory) -> Iterator[sessionmaker[Session]]:
    """A SQLite database built by the migrations, as the embedded default runs."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('sqlite')) / 'webhooks.db'}"
    upgrade(url)
    engine = make_engine(url, pool_size=4)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def factory(request) -> sessionmaker[Session]:
    """Sessions on each storage backend in turn: the test PostgreSQL, then SQLite."""
    if request.param == "postgresql":
        return get_sessionmaker()
    return request.getfixturevalue("sqlite_factory")
