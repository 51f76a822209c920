"""Queue-name mapping, topic patterns, options and envelopes of the transport (no database)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.transport.messages import (
    clamp_priority,
    delivered_payload,
    is_envelope,
    prepare_envelope,
    topic_pattern,
)
from pgflow_kombu.transport.names import MAX_LENGTH, channel_name, pgmq_name, table_name
from pgflow_kombu.transport.options import Options


@pytest.mark.parametrize("name", ["celery", "my_flow", "MyFlow", "_x", "a" * 47, "flow_2"])
def test_names_pgmq_can_take_map_to_themselves(name: str) -> None:
    assert pgmq_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "a" * 48,
        "celery@host.example.celery.pidbox",
        "0a1b2c3d-4e5f.reply.celery.pidbox",
        "with-dash",
        "9starts_with_digit",
        "émoji🙂",
        "",
    ],
)
def test_other_names_map_to_valid_hashed_names(name: str) -> None:
    mapped = pgmq_name(name)
    assert mapped != name
    assert len(mapped) <= MAX_LENGTH
    assert re.fullmatch(r"0[0-9a-f]{16}(_[a-z0-9_]*)?", mapped)
    assert len(channel_name(mapped)) < 64
    assert table_name(mapped) == "q_" + mapped


def test_hashed_names_do_not_collide_with_each_other_or_with_slugs() -> None:
    names = [f"{'x' * 60}{i}" for i in range(2000)] + [f"q.{i}" for i in range(2000)]
    mapped = {pgmq_name(n) for n in names}
    assert len(mapped) == len(names)
    # A hashed name starts with a digit: no name that maps to itself does.
    assert all(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m) for m in mapped)


def test_long_names_sharing_a_prefix_stay_distinct() -> None:
    base = "celery.pidbox.reply." + "a" * 40
    assert pgmq_name(base + "1") != pgmq_name(base + "2")


def amqp_topic_match(binding: str, key: str) -> bool:
    """Reference matcher: AMQP topic semantics by recursion over words."""

    def match(b: list[str], k: list[str]) -> bool:
        if not b:
            return not k
        if b[0] == "#":
            return any(match(b[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        if b[0] == "*" or b[0] == k[0]:
            return match(b[1:], k[1:])
        return False

    return match(binding.split("."), key.split("."))


@pytest.mark.parametrize(
    "binding",
    ["t.*", "t", "#", "t.#", "#.t", "*.b.#", "a.*.c", "a.#.c", "x-y.z+", "*", "a.b", "worker.#"],
)
@pytest.mark.parametrize(
    "key", ["t", "t.1", "t.1.2", "a.b.c", "a.c", "a.x.y.c", "x-y.z+", "b", "worker.online", "q.b"]
)
def test_topic_pattern_follows_amqp(binding: str, key: str) -> None:
    pattern = re.compile(topic_pattern(binding))
    assert bool(pattern.match("." + key)) == amqp_topic_match(binding, key)


def test_options_parse_and_reject_bad_values() -> None:
    opts = Options.from_transport_options(
        {"visibility_timeout": "30", "eta_in_queue": "true", "max_retries": 3}
    )
    assert opts.visibility_timeout == 30.0
    assert opts.eta_in_queue is True
    with pytest.raises(ConfigurationError, match="ack_mode"):
        Options.from_transport_options({"ack_mode": "drop"})
    with pytest.raises(ConfigurationError, match="read_batch_size"):
        Options.from_transport_options({"read_batch_size": "many"})


def envelope(**properties: object) -> dict[str, object]:
    return {
        "body": "e30=",
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {"delivery_info": {}, **properties},
    }


def test_envelopes_and_plain_messages_are_told_apart() -> None:
    assert is_envelope(envelope())
    assert not is_envelope({"flow_slug": "f", "run_id": "r", "step_slug": "s", "task_index": 0})
    assert not is_envelope([1, 2])
    assert not is_envelope({"body": "x", "properties": "nope", "content-type": "x"})


def test_prepare_envelope_clamps_priority_and_reads_delays() -> None:
    message = envelope(priority="12")
    message["headers"] = {"x-delay": 1500}
    text, delay = prepare_envelope(message, eta_in_queue=False)
    assert json.loads(text)["properties"]["priority"] == 9
    assert delay == 1.5
    assert clamp_priority(None) == 0
    assert clamp_priority(-3) == 0

    eta = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    later = envelope()
    later["headers"] = {"eta": eta}
    assert prepare_envelope(later, eta_in_queue=False)[1] == 0.0
    assert 28 < prepare_envelope(later, eta_in_queue=True)[1] <= 30
    # The "Z" form of UTC, which Python 3.10's datetime.fromisoformat refuses by itself.
    later["headers"] = {"eta": eta.replace("+00:00", "Z")}
    assert 28 < prepare_envelope(later, eta_in_queue=True)[1] <= 30


def test_plain_message_is_delivered_as_json_with_pgmq_details() -> None:
    text = json.dumps({"flow_slug": "f", "run_id": "r", "step_slug": "s", "task_index": 0})
    payload, plain = delivered_payload(
        text, delivery_tag=7, queue="f", pgmq_queue="f", msg_id=42, read_ct=2
    )
    assert plain
    assert payload["body"] == text
    info = payload["properties"]["delivery_info"]
    assert info["pgmq_msg_id"] == 42
    assert info["pgmq_read_ct"] == 2
    assert info["redelivered"] is True
    assert info["pgmq_plain"] is True
    assert payload["properties"]["delivery_tag"] == 7
