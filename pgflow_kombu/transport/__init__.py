"""pgflow transport module for kombu: a virtual transport on pgmq queues in PostgreSQL.

Importing :mod:`pgflow_kombu` registers the ``pgflow`` alias, so ``pgflow://`` URLs work with
``kombu.Connection`` and as Celery's ``broker_url``; the class can also be named directly
(``transport="pgflow_kombu.transport:Transport"``, Celery's ``broker_transport``). The database
needs pgmq and pgflow-kombu's schema (``pgflow-kombu db upgrade``).

Features
========
* Type: Virtual
* Supports Direct: Yes
* Supports Topic: Yes
* Supports Fanout: Yes
* Supports Priority: Yes (0-9, a higher number is more urgent, as in AMQP)
* Supports TTL: Yes (per message ``expiration``; per queue ``x-message-ttl``, kombu's
  ``Queue(message_ttl=...)``: older messages are dropped, never delivered)
* Supports queue expiry: Yes (``x-expires``, kombu's ``Queue(expires=...)``)
* Supports auto-delete queues: Yes (deleted with their last consumer, counted over every
  connection to the database)
* Supports delayed delivery: Yes (``x-delay`` header in ms, ``DelaySeconds`` property; Celery's
  ``eta``/``countdown`` with the ``eta_in_queue`` option)
* Supports native event loop: Yes (LISTEN/NOTIFY registered with kombu's Hub)

How it works
============
Each kombu queue is a pgmq queue (a table ``pgmq.q_<name>``); names pgmq cannot take as they are
(longer than 47 characters, or with dots, dashes, ``@``...) map to a hashed name, while a name pgmq
takes (a pgflow flow slug) maps to itself - see :mod:`pgflow_kombu.transport.names`. Exchanges and
bindings are rows in ``pgflow_kombu.exchanges`` / ``pgflow_kombu.bindings``, shared by every
process; a publish to an exchange routes and stores in one round trip.

* Reads take a batch sized by the prefetch count, in priority then publish order, and hide the
  messages for ``visibility_timeout`` seconds; the consumer keeps pushing that forward for the
  messages it still holds (a Celery task waiting for its eta is not delivered twice).
* Ack deletes the message (or archives it, ``ack_mode="archive"``). Acks given while delivering
  are grouped into one statement per queue.
* Reject/requeue, and the restore of unacknowledged messages when a channel closes, make the
  message visible again at once (no re-insert); the next delivery has ``redelivered`` set
  (``redelivered`` is ``read_ct > 1``). Consumers with ``no_ack`` delete what they take.
* Expired messages are deleted when a read meets them.
* Queue lifetimes are shared by every process on the database (``pgflow_kombu.consumers``): each
  consumer is tied to the listening connection of its transport. An auto-delete queue is
  deleted, with its bindings, when its last consumer goes away: cancelled, its channel or
  connection closed, or its process gone (even killed: its connection closes). An auto-delete
  queue that never had a consumer stays. A queue with ``x-expires`` is deleted, with its
  bindings and messages, once it was unused (no consumer, no ``basic_get``, no declaration) for
  that long. Transports that wait for messages (consumers, Celery workers) check for such
  queues every ``sweep_interval`` (one statement, at most one process at a time), so a queue
  goes up to that much later (a killed Celery worker's pidbox queue, for instance).
  ``queue_delete(if_unused=True)`` keeps a queue with a consumer. Other queue arguments
  (``x-max-length``, ``x-dead-letter-exchange``...) are recorded but have no effect.
* Wake-ups: a trigger on each consumed queue's table sends a NOTIFY (channel
  ``pgflow_kombu.q_<name>``, empty payload) when a message arrives in a queue where none of the
  messages just before it still waits for its first read (then consumers are due to read
  anyway), including pgmq's and pgflow's own inserts; consumers LISTEN on a dedicated
  connection, on kombu's event loop or in the blocking ``drain_events``. A timer (``polling_interval``) picks up delayed messages and
  expired visibility timeouts.
* On kombu's event loop (a Celery worker), queues are read in the callbacks of the listening
  socket and of a self-pipe, right after the loop's poll, never on the loop's tick: Celery's
  prefork pool sends the jobs it holds to its processes on its own tick, which runs in no set
  order with ours, so a message handed over on a tick could wait for the next timer.
* Poll-only (``PGFLOW_POLL_ONLY=1``, for a transaction-pooling PgBouncer in front of the
  database): no LISTEN, no prepared statements, no startup ``options``; consumers read on the
  ``polling_interval`` timer (and again at once after a read that filled its batch). The sweep
  cannot see a pooler's backends, so it drops the consumer rows: auto-delete and ``x-expires``
  queues (Celery's reply and pidbox queues) need a direct or session-pooled connection.

Plain pgmq messages
===================
A message that is not a kombu envelope (a JSON object with ``body``, ``content-type`` and a
``properties`` object) - pgflow's task messages - is delivered with the JSON text as body
(``application/json``). ``delivery_info`` carries ``pgmq_plain=True``, ``pgmq_queue``,
``pgmq_msg_id`` and ``pgmq_read_ct``; ``redelivered`` is ``read_ct > 1``; the delivery tag is unique
on the channel. Such a message is never re-inserted or deleted by the transport: its ack costs
nothing (the pgflow worker archives it through ``complete_task``/``fail_task``), a reject without
requeue does nothing, a requeue makes it visible at once, and closing the channel leaves its
visibility alone. Envelopes carry the same ``pgmq_*`` keys with ``pgmq_plain=False``.

Connection String
=================
.. code-block::

    pgflow://USER:PASSWORD@HOST:PORT/DATABASE
    pgflow+postgresql://USER@/DATABASE?host=/path/to/socket/dir&sslmode=disable

kombu splits a ``pgflow://`` URL into host, port, user, password and virtual host (the database),
as for Redis: ``Connection.port`` and the others are set, and failover alternates
(``"pgflow://a/db;pgflow://b/db"``) work as for any broker. A Unix socket directory may stand in
the host part, percent-encoded (``pgflow://postgres@%2Frun%2Fpostgresql/db``; kombu lower-cases
it). kombu refuses query parameters there: a URL with libpq parameters after ``?`` is written
``pgflow+postgresql://...`` and reaches libpq whole (failover alternates cannot take this form).
A URL that cannot be used, or a server that cannot be reached, fails at connect time with an
error naming the URL (password hidden).

Every connection has TCP keepalives and ``tcp_user_timeout`` on both ends (``PGFLOW_KEEPALIVES_*``,
``PGFLOW_TCP_USER_TIMEOUT``; the URL's ``keepalives_idle=``... win) and a ``statement_timeout``
(``PGFLOW_STATEMENT_TIMEOUT``, default 60 s): a cut link fails within seconds as a connection
error, on which kombu (and Celery) reconnect, and the server ends the backend of a consumer that
vanished without closing its connection, so a sweep stops counting it within seconds.

Transport Options
=================
* ``visibility_timeout``: seconds a read message stays invisible to other consumers while
  unacknowledged (default ``1800``); held messages are extended every quarter of it.
* ``polling_interval``: seconds between reads that pick up delayed messages and expired
  visibility timeouts (default ``1.0``). New messages do not wait for it: they are announced.
* ``sweep_interval``: seconds between checks for queues to delete: ``x-expires`` run out, or
  auto-delete queues whose last consumer's connection is gone (default ``5.0``).
* ``read_batch_size``: most messages one read takes (default ``100``; the prefetch count limits
  it further).
* ``ack_mode``: ``"delete"`` (default) or ``"archive"`` (into pgmq's archive table ``a_<name>``).
* ``eta_in_queue``: hold Celery ``countdown``/``eta`` tasks in the queue until they are due,
  instead of in the worker's memory (default ``False``; ``celery inspect scheduled`` then
  shows nothing for them).
* ``durable_acks``: wait for the disk on reads, acks and requeues too (default ``False``: those
  commit asynchronously, so a server crash may deliver a message again; publishes always wait).
* ``pool_size``: idle database connections kept per pool (default ``4``).
* ``application_name``: shown in ``pg_stat_activity`` (default ``"pgflow-kombu"``).
* ``body_encoding``, ``deadletter_queue``: as for every kombu virtual transport.
"""

from __future__ import annotations

from pgflow_kombu.transport.channel import Channel
from pgflow_kombu.transport.transport import Transport

__all__ = ["Channel", "Transport"]
