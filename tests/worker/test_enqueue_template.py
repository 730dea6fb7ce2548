"""The spike's fast path of ``worker.enqueue``: each message is, byte for byte, the JSON of
``task_message`` (itself compared with what Celery sends in test_enqueue.py), with fresh
version-4 UUIDs for its task id and delivery tag."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.app import app
from worker.enqueue import MessageTemplate, enqueue_tasks, task_message, uuid4s
from worker.tasks import charge


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1), st.sampled_from(("w1@host", "gen%d@x", 'q"uote', "한")))
def test_a_rendered_message_is_json_dumps_of_task_message(one: int, origin: str) -> None:
    template = MessageTemplate(app, charge, origin=origin)
    task_id, tag = uuid4s(2)
    expected = json.dumps(task_message(app, charge, (one,), task_id, origin=origin, delivery_tag=tag))
    assert template.render(one, task_id, tag) == expected


def test_uuid4s_are_distinct_version_4_uuids() -> None:
    keys = uuid4s(5000)
    assert len(set(keys)) == 5000
    for key in keys:
        parsed = uuid.UUID(key)
        assert (str(parsed), parsed.version, parsed.variant) == (key, 4, uuid.RFC_4122)
    # every random bit varies (a fixed bit would show up as the same character everywhere)
    assert all(len({key[i] for key in keys}) > 1 for i in range(36) if i not in (8, 13, 14, 18, 23))
    assert uuid4s(0) == []


def test_enqueued_messages_carry_their_own_ids(redis_service) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_service.url)
    client.delete("celery")
    ids = list(range(1, 2501))  # two chunks of 2000 and 500
    assert enqueue_tasks(app, charge, ids, url=redis_service.url) == 2500
    messages = [json.loads(m) for m in reversed(client.lrange("celery", 0, -1))]  # BRPOP order
    assert [json.loads(base64.b64decode(m["body"]))[0] for m in messages] == [[i] for i in ids]
    task_ids = [m["headers"]["id"] for m in messages]
    tags = [m["properties"]["delivery_tag"] for m in messages]
    assert len(set(task_ids) | set(tags)) == 5000
    for m in messages:
        assert m["headers"]["id"] == m["headers"]["root_id"] == m["properties"]["correlation_id"]
        assert m == task_message(app, charge, tuple(json.loads(base64.b64decode(m["body"]))[0]),
                                 m["headers"]["id"], origin=m["headers"]["origin"],
                                 delivery_tag=m["properties"]["delivery_tag"])
