"""Static statements for the flow queues (pgflow_kombu.queue_send / queue_archive).

They are generated with one static statement per flow queue, and fall back to a dynamic statement
for a queue they do not know: both paths must store and archive exactly the same rows."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query

Conn = psycopg.Connection[Any]


def static_queues(conn: Conn) -> list[str]:
    """The queues with static statements (the same in all three functions)."""
    row = conn.execute(test_query("qs_static_queues")).fetchone()
    assert row is not None
    send, archive, set_vt = (r or [] for r in row)
    assert send == archive == set_vt
    return list(send)


def rows(conn: Conn, table: str) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT to_jsonb(q) - 'archived_at' FROM {} AS q ORDER BY msg_id").format(
        sql.Identifier("pgmq", table)
    )
    return [r[0] for r in conn.execute(query).fetchall()]


def visibility(conn: Conn, queue: str) -> list[tuple[Any, int]]:
    query = sql.SQL(
        "SELECT message, round(extract(epoch FROM vt - clock_timestamp()))::integer "
        "FROM {} ORDER BY msg_id"
    ).format(sql.Identifier("pgmq", f"q_{queue}"))
    return [(r[0], r[1]) for r in conn.execute(query).fetchall()]


def send(conn: Conn, queue: str, messages: list[Any], delays: list[int]) -> list[int]:
    row = conn.execute(
        test_query("qs_send"),
        {"queue": queue, "messages": [Jsonb(m) for m in messages], "delays": delays},
    ).fetchone()
    assert row is not None
    return list(row[0])


def test_create_flow_gives_its_queue_static_statements(conn: Conn) -> None:
    assert static_queues(conn) == []
    conn.execute(test_query("qs_create_flow"), {"slug": "alpha"})
    conn.execute(test_query("qs_create_flow"), {"slug": "beta"})
    assert static_queues(conn) == ["alpha", "beta"]


def test_rolled_back_flow_leaves_statements_as_they_were(conn: Conn) -> None:
    conn.execute(test_query("qs_create_flow"), {"slug": "kept"})
    with pytest.raises(RuntimeError), conn.transaction():
        conn.execute(test_query("qs_create_flow"), {"slug": "undone"})
        raise RuntimeError("roll back")
    assert static_queues(conn) == ["kept"]


@pytest.mark.parametrize("path", ["static", "dynamic"])
def test_send_stores_messages_in_order_with_their_delays(conn: Conn, path: str) -> None:
    if path == "static":
        conn.execute(test_query("qs_create_flow"), {"slug": "q1"})
        assert "q1" in static_queues(conn)
    else:
        conn.execute("SELECT pgmq.create('q1')")  # a queue without a flow: no static statement
        assert "q1" not in static_queues(conn)
    messages = [{"n": 1}, {"n": 2}, {"n": 3}]
    ids = send(conn, "q1", messages, [0, 30, 5])
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert visibility(conn, "q1") == [({"n": 1}, 0), ({"n": 2}, 30), ({"n": 3}, 5)]


@pytest.mark.parametrize("path", ["static", "dynamic"])
def test_archive_moves_every_column(conn: Conn, path: str) -> None:
    if path == "static":
        conn.execute(test_query("qs_create_flow"), {"slug": "arc"})
    else:
        conn.execute("SELECT pgmq.create('arc')")
    ids = send(conn, "arc", [{"n": 1}, {"n": 2}, {"n": 3}], [0, 0, 0])
    conn.execute("SELECT pgmq.read('arc', 30, 2)")  # read_ct, vt and last_read_at change
    before = rows(conn, "q_arc")

    conn.execute(test_query("qs_archive"), {"queue": "arc", "ids": [ids[0], ids[1]]})

    assert rows(conn, "a_arc") == before[:2]
    assert rows(conn, "q_arc") == before[2:]


@pytest.mark.parametrize("path", ["static", "dynamic"])
def test_set_vt_sets_each_messages_visibility(conn: Conn, path: str) -> None:
    if path == "static":
        conn.execute(test_query("qs_create_flow"), {"slug": "vis"})
    else:
        conn.execute("SELECT pgmq.create('vis')")
    ids = send(conn, "vis", [{"n": 1}, {"n": 2}, {"n": 3}], [100, 100, 100])
    conn.execute(
        test_query("qs_set_vt"), {"queue": "vis", "ids": [ids[2], ids[0]], "offsets": [7, 0]}
    )
    assert visibility(conn, "vis") == [({"n": 1}, 0), ({"n": 2}, 100), ({"n": 3}, 7)]


def test_each_of_many_queues_gets_its_own_messages(conn: Conn) -> None:
    names = [f"flow_{c}" for c in "gcakeibfjdh"]  # unsorted, odd count: every branch of the search
    for name in names:
        conn.execute(test_query("qs_create_flow"), {"slug": name})
    assert static_queues(conn) == sorted(names)
    for i, name in enumerate(names):
        send(conn, name, [{"queue": name}] * (i + 1), [0] * (i + 1))
    for i, name in enumerate(names):
        assert [m for m, _ in visibility(conn, name)] == [{"queue": name}] * (i + 1)
    send(conn, "flow_a", [{"again": True}], [0])  # first name, a second time
    assert len(visibility(conn, "flow_a")) == 4


def test_flows_created_concurrently_all_get_static_statements(db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def create(i: int) -> None:
        try:
            with connect(db_url, autocommit=False) as c:
                barrier.wait(10)
                c.execute(test_query("qs_create_flow"), {"slug": f"par_{i}"})
                c.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with connect(db_url) as c:
        assert static_queues(c) == sorted(f"par_{i}" for i in range(6))


def test_a_dropped_queue_fails_like_pgmq_and_a_recreated_one_works(conn: Conn) -> None:
    conn.execute(test_query("qs_create_flow"), {"slug": "gone"})
    send(conn, "gone", [{"n": 1}], [0])
    conn.execute("SELECT pgmq.drop_queue('gone')")
    with pytest.raises(psycopg.errors.UndefinedTable):
        send(conn, "gone", [{"n": 2}], [0])
    conn.execute("SELECT pgmq.create('gone')")
    send(conn, "gone", [{"n": 3}], [0])
    assert [m for m, _ in visibility(conn, "gone")] == [{"n": 3}]
