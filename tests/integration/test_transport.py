"""The pgflow:// transport beyond kombu's contract: pgmq and pgflow messages, names, options."""

from __future__ import annotations

import json
import threading
import time
from contextlib import closing, suppress
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import kombu
import psycopg
import pytest

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from pgflow_kombu.errors import ConnectionFailed, DataRejected
from pgflow_kombu.transport import store
from pgflow_kombu.transport.names import pgmq_name
from tests.celery_app.urls import broker_url, parsed_broker_url

Conn = psycopg.Connection[Any]
TASK = {"flow_slug": "my_flow", "run_id": "r1", "step_slug": "s1", "task_index": 0}


@pytest.fixture
def url(db_url: str) -> str:
    return broker_url(db_url)


def connection(url: str, **options: Any) -> kombu.Connection:
    return kombu.Connection(url, transport_options=options)


def rows(conn: Conn, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT msg_id, read_ct, vt FROM pgmq.{table} ORDER BY msg_id").fetchall()


def exists(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pgmq.{table}",)).fetchone()
    return bool(row and row[0])


def drain_all(conn: kombu.Connection, seconds: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            return


class Collector:
    def __init__(self, ack: bool = True) -> None:
        self.messages: list[kombu.Message] = []
        self.ack = ack

    def __call__(self, body: Any, message: kombu.Message) -> None:
        self.messages.append(message)
        if self.ack:
            message.ack()

    @property
    def bodies(self) -> list[Any]:
        return [m.payload for m in self.messages]


# -- pgflow's plain pgmq messages ------------------------------------------------------------


def test_plain_messages_arrive_as_json_with_their_pgmq_details(conn: Conn, url: str) -> None:
    for slug in ("my_flow", "other_flow"):
        conn.execute("SELECT pgmq.create(%s)", (slug,))
        conn.execute("SELECT pgmq.send(%s, %s::jsonb)", (slug, json.dumps({**TASK, "s": slug})))
    got = Collector(ack=False)
    with connection(url) as kconn:
        queues = [kombu.Queue(s, no_declare=True) for s in ("my_flow", "other_flow")]
        with kombu.Consumer(kconn, queues, callbacks=[got], accept=["json"]):
            drain_all(kconn)
        assert sorted(b["s"] for b in got.bodies) == ["my_flow", "other_flow"]
        infos = [m.delivery_info for m in got.messages]
        # msg_ids repeat across queues; delivery tags do not.
        assert [i["pgmq_msg_id"] for i in infos] == [1, 1]
        assert len({m.delivery_tag for m in got.messages}) == 2
        assert {i["pgmq_queue"] for i in infos} == {"my_flow", "other_flow"}
        assert all(i["pgmq_plain"] and i["pgmq_read_ct"] == 1 for i in infos)
        assert not any(i["redelivered"] for i in infos)
        assert all(m.content_type == "application/json" for m in got.messages)


def test_plain_message_ack_and_restore_leave_it_to_pgflow(
    conn: Conn, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn.execute("SELECT pgmq.create('my_flow')")
    conn.execute("SELECT pgmq.send('my_flow', %s::jsonb)", (json.dumps(TASK),))
    conn.execute("SELECT pgmq.send('my_flow', %s::jsonb)", (json.dumps({**TASK, "task_index": 1}),))
    settled: list[Any] = []
    monkeypatch.setattr(store, "delete", lambda *a: settled.append(a))
    monkeypatch.setattr(store, "archive", lambda *a: settled.append(a))
    got = Collector(ack=False)
    flow_queue = kombu.Queue("my_flow", no_declare=True)
    with (
        connection(url) as kconn,
        kombu.Consumer(kconn, [flow_queue], callbacks=[got]),
    ):
        drain_all(kconn)
        assert len(got.messages) == 2
        got.messages[0].ack()
        before = rows(conn, "q_my_flow")
        # The channel closed with messages[1] unacknowledged: its visibility is left alone.
    assert settled == []
    after = rows(conn, "q_my_flow")
    assert after == before
    assert all(vt > datetime.now(timezone.utc) for _, _, vt in after)


def test_plain_message_requeue_makes_it_visible_and_redelivered(conn: Conn, url: str) -> None:
    conn.execute("SELECT pgmq.create('my_flow')")
    conn.execute("SELECT pgmq.send('my_flow', %s::jsonb)", (json.dumps(TASK),))
    with connection(url) as kconn, closing(kconn.SimpleQueue(kombu.Queue("my_flow"))) as q:
        first = q.get(timeout=2)
        first.requeue()
        again = q.get(timeout=2)
        assert again.payload == TASK
        assert again.delivery_info["redelivered"] is True
        assert again.delivery_info["pgmq_read_ct"] == 2
    assert len(rows(conn, "q_my_flow")) == 1  # never re-inserted


def test_sql_insert_wakes_a_blocking_consumer(conn: Conn, url: str) -> None:
    conn.execute("SELECT pgmq.create('my_flow')")
    got = Collector()
    # With a one-minute polling interval only the NOTIFY can deliver within the drain timeout.
    flow_queue = kombu.Queue("my_flow", no_declare=True)
    with (
        connection(url, polling_interval=60) as kconn,
        kombu.Consumer(kconn, [flow_queue], callbacks=[got]),
    ):
        drain_all(kconn, 0.2)
        sender = threading.Timer(
            0.3,
            lambda: conn.execute(
                "SELECT pgmq.send_batch('my_flow', ARRAY[%s::jsonb, %s::jsonb])",
                (json.dumps(TASK), json.dumps(TASK)),
            ),
        )
        sender.start()
        kconn.drain_events(timeout=10)
        sender.join()
        drain_all(kconn, 0.3)
    assert got.bodies == [TASK, TASK]


def test_wake_up_is_sent_only_when_no_older_message_waits(
    conn: Conn, db_url: str, url: str
) -> None:
    with connection(url) as kconn, kconn.channel() as channel:
        kombu.Queue("quiet")(channel).declare()
    with psycopg.connect(db_url, autocommit=True) as ear:
        ear.execute('LISTEN "pgflow_kombu.q_quiet"')

        def heard() -> int:
            return len(list(ear.notifies(timeout=0.3)))

        conn.execute("SELECT pgmq.send('quiet', '{}'::jsonb)")
        assert heard() == 1  # the queue was idle: consumers must be woken
        conn.execute("SELECT pgmq.send('quiet', '{}'::jsonb)")
        assert heard() == 0  # an older message still waits: consumers are due to read anyway
        conn.execute("SELECT * FROM pgmq.read('quiet', 30, 10)")
        conn.execute("SELECT pgmq.send_batch('quiet', ARRAY['{}'::jsonb, '{}'::jsonb])")
        assert heard() == 1  # everything older was taken: wake again, once for the whole batch


# -- names, routing ----------------------------------------------------------------------------


def test_queue_names_of_any_length(conn: Conn, url: str) -> None:
    base = "celery@worker-1.example.com.celery.pidbox." + "x" * 40
    names = [base + "1", base + "2", "short_name"]
    with connection(url) as kconn:
        for name in names:
            with closing(kconn.SimpleQueue(name)) as q:
                q.put({"name": name})
        for name in names:
            with closing(kconn.SimpleQueue(name)) as q:
                message = q.get(timeout=2)
                assert message.payload == {"name": name}
                message.ack()
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='pgmq'")}
    assert {"q_short_name", "q_" + pgmq_name(names[0]), "q_" + pgmq_name(names[1])} <= tables


def test_bindings_are_shared_by_every_connection(url: str) -> None:
    topic = kombu.Exchange("events", type="topic")
    fanout = kombu.Exchange("broadcast", type="fanout")
    queues = [
        kombu.Queue("orders", topic, routing_key="order.*"),
        kombu.Queue("everything", topic, routing_key="#"),
        kombu.Queue("node1", fanout),
        kombu.Queue("node2", fanout),
    ]
    with connection(url) as declaring, declaring.channel() as channel:
        for queue in queues:
            queue(channel).declare()
    # A new connection (a new process, as far as kombu knows) publishes without declaring.
    with connection(url) as publishing:
        producer = publishing.Producer()
        producer.publish({"n": 1}, exchange="events", routing_key="order.created")
        producer.publish({"n": 2}, exchange="events", routing_key="user.created")
        producer.publish({"n": 3}, exchange="broadcast", routing_key="ignored")
    expected = {"orders": [1], "everything": [1, 2], "node1": [3], "node2": [3]}
    with connection(url) as consuming:
        for name, numbers in expected.items():
            got = Collector()
            with kombu.Consumer(consuming, [kombu.Queue(name, no_declare=True)], callbacks=[got]):
                drain_all(consuming, 0.5)
            assert [b["n"] for b in got.bodies] == numbers, name


def test_exchange_redeclared_with_another_type_is_refused(url: str) -> None:
    with connection(url) as kconn, kconn.channel() as channel:
        kombu.Exchange("typed", type="direct")(channel).declare()
        with pytest.raises(Exception, match="redeclare"):
            kombu.Exchange("typed", type="fanout")(channel).declare()


def test_auto_delete_queue_goes_with_its_bindings(conn: Conn, url: str) -> None:
    exchange = kombu.Exchange("replies", type="direct")
    queue = kombu.Queue("reply.abc", exchange, routing_key="abc", auto_delete=True)
    with connection(url) as kconn, kombu.Consumer(kconn, [queue], callbacks=[Collector()]):
        table = "q_" + pgmq_name("reply.abc")
        assert exists(conn, table)
    assert not exists(conn, table)
    assert conn.execute("SELECT count(*) FROM pgflow_kombu.bindings").fetchone() == (0,)


# -- delivery semantics ------------------------------------------------------------------------


def test_prefetch_sizes_the_batch(url: str) -> None:
    got = Collector(ack=False)
    with connection(url) as kconn, closing(kconn.SimpleQueue("batched")) as q:
        for i in range(5):
            q.put(i)
        with kombu.Consumer(kconn, [kombu.Queue("batched")], callbacks=[got], prefetch_count=2):
            kconn.drain_events(timeout=2)
            assert got.bodies == [0, 1]
            for m in got.messages:
                m.ack()
            kconn.drain_events(timeout=2)
            assert got.bodies == [0, 1, 2, 3]


def test_grouped_acks_delete_every_message(conn: Conn, url: str) -> None:
    got = Collector()
    with connection(url) as kconn:
        producer = kconn.Producer()
        queue = kombu.Queue("many")
        for i in range(120):
            producer.publish(i, routing_key="many", declare=[queue])
        with kombu.Consumer(kconn, [queue], callbacks=[got]):
            drain_all(kconn, 1.0)
    assert sorted(got.bodies) == list(range(120))
    assert rows(conn, "q_many") == []


def test_ack_mode_archive_moves_messages_to_the_archive(conn: Conn, url: str) -> None:
    with connection(url, ack_mode="archive") as kconn, closing(kconn.SimpleQueue("kept")) as q:
        q.put({"keep": True})
        q.get(timeout=2).ack()
    assert rows(conn, "q_kept") == []
    assert conn.execute("SELECT count(*) FROM pgmq.a_kept").fetchone() == (1,)


def test_no_ack_consumer_takes_messages_away(conn: Conn, url: str) -> None:
    got = Collector(ack=False)
    with connection(url) as kconn, closing(kconn.SimpleQueue("fire")) as q:
        q.put(1)
        q.put(2)
        with kombu.Consumer(kconn, [kombu.Queue("fire")], callbacks=[got], no_ack=True):
            drain_all(kconn, 0.5)
    assert got.bodies == [1, 2]
    assert rows(conn, "q_fire") == []


def test_delayed_delivery_waits_in_the_queue(url: str) -> None:
    with connection(url, polling_interval=0.2) as kconn, closing(kconn.SimpleQueue("later")) as q:
        q.put("delayed", headers={"x-delay": 1200})
        q.put("now")
        assert q.get(timeout=2).payload == "now"
        with pytest.raises(q.Empty):
            q.get_nowait()
        assert q.get(timeout=5).payload == "delayed"


def test_eta_in_queue_option_delays_celery_eta_messages(conn: Conn, url: str) -> None:
    eta = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    for option in (False, True):
        with connection(url, eta_in_queue=option) as kconn:
            kconn.Producer().publish(
                {"task": "x"},
                routing_key=f"eta_{option}",
                headers={"eta": eta},
                declare=[kombu.Queue(f"eta_{option}")],
            )
    (immediate,) = rows(conn, "q_eta_false")
    (held,) = rows(conn, "q_eta_true")
    now = datetime.now(timezone.utc)
    assert immediate[2] <= now
    assert held[2] > now + timedelta(seconds=20)


def test_queue_message_ttl(conn: Conn, url: str) -> None:
    queue = kombu.Queue("short_lived", message_ttl=1.0)
    with connection(url) as kconn:
        producer = kconn.Producer()
        producer.publish("expired", routing_key="short_lived", declare=[queue])
        time.sleep(1.3)
        producer.publish("fresh", routing_key="short_lived")
    row = conn.execute("SELECT arguments FROM pgflow_kombu.queues WHERE name = 'short_lived'")
    assert row.fetchone() == ({"x-message-ttl": 1000},)
    # Read by a connection that did not declare the queue: the TTL is the queue's own.
    got = Collector()
    undeclared = kombu.Queue("short_lived", no_declare=True)
    with connection(url) as other, kombu.Consumer(other, [undeclared], callbacks=[got]):
        drain_all(other, 0.5)
    assert got.bodies == ["fresh"]
    assert rows(conn, "q_short_lived") == []


def test_held_messages_stay_hidden_past_the_visibility_timeout(url: str) -> None:
    holder_got = Collector(ack=False)
    with connection(url, visibility_timeout=1) as holder, connection(url) as other:
        with closing(other.SimpleQueue("held")) as q:
            q.put("precious")
        with kombu.Consumer(holder, [kombu.Queue("held")], callbacks=[holder_got]):
            holder.drain_events(timeout=2)
            assert holder_got.bodies == ["precious"]
            deadline = time.monotonic() + 3  # three visibility timeouts
            with closing(other.SimpleQueue("held")) as q:
                while time.monotonic() < deadline:
                    drain_all(holder, 0.2)  # the holder keeps its loop running
                    with pytest.raises(q.Empty):
                        q.get_nowait()
            holder_got.messages[0].ack()


# -- connections -------------------------------------------------------------------------------


def test_transport_class_can_be_named_instead_of_the_alias(db_url: str) -> None:
    # kombu splits the URL into parts as for pgflow://, so it carries no query parameters.
    url = parsed_broker_url(db_url).replace("pgflow://", "postgresql://", 1)
    conn = kombu.Connection(url, transport="pgflow_kombu.transport:Transport")
    assert conn.port == urlsplit(url).port
    with conn, closing(conn.SimpleQueue("named")) as q:
        q.put("via the class path")
        assert q.get(timeout=2).payload == "via the class path"


def test_unreachable_server_is_a_clear_error() -> None:
    conn = kombu.Connection("pgflow://someone:secret@127.0.0.1:1/nowhere", connect_timeout=2)
    with pytest.raises(ConnectionFailed) as failure:
        conn.connect()
    message = str(failure.value)
    assert "cannot connect to" in message
    assert "127.0.0.1" in message
    assert "secret" not in message


def test_missing_database_is_a_clear_error(url: str) -> None:
    missing = url.replace("/t_", "/missing_t_", 1)
    with pytest.raises(ConnectionFailed, match="does not exist"):
        kombu.Connection(missing).connect()


def test_connection_errors_let_kombu_reconnect(url: str) -> None:
    with connection(url) as kconn:
        assert ConnectionFailed in kconn.connection_errors
        assert issubclass(ConnectionFailed, kconn.recoverable_connection_errors)
        # a statement the server refused is not a reason to reconnect
        assert not issubclass(DataRejected, kconn.recoverable_connection_errors)
        assert kconn.transport.implements.asynchronous


def test_each_message_goes_to_one_of_two_competing_consumers(url: str) -> None:
    count = 500
    with connection(url) as kconn, closing(kconn.SimpleQueue("shared")) as q:
        for i in range(count):
            q.put(i)
    got: dict[str, list[int]] = {"a": [], "b": []}
    started = {name: threading.Event() for name in got}
    failures: list[BaseException] = []

    def consume(name: str, other: str) -> None:
        def on_message(body: Any, message: kombu.Message) -> None:
            got[name].append(body)
            message.ack()
            started[name].set()
            # Both take part: each waits for the other's first delivery before going on.
            started[other].wait(10)

        try:
            # A read that came back empty is tried again soon (not after the default 1 s), so
            # that the two keep reading side by side until the queue is drained.
            with (
                connection(url, polling_interval=0.05) as kconn,
                kombu.Consumer(
                    kconn, [kombu.Queue("shared")], callbacks=[on_message], prefetch_count=1
                ),
            ):
                deadline = time.monotonic() + 60
                while len(got["a"]) + len(got["b"]) < count and time.monotonic() < deadline:
                    with suppress(TimeoutError):
                        kconn.drain_events(timeout=0.2)
        except BaseException as exc:
            failures.append(exc)

    # Two connections reading the queue at the same moment, each from its own thread.
    threads = [
        threading.Thread(target=consume, args=("a", "b")),
        threading.Thread(target=consume, args=("b", "a")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not failures
    delivered = got["a"] + got["b"]
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert sorted(delivered) == list(range(count))
    assert got["a"] and got["b"]
