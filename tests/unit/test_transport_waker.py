"""The transport's self-pipe once closed: descriptor numbers are reused by the process, so a late
call from another thread must never touch them."""

from __future__ import annotations

import os

import pytest

from pgflow_kombu.transport.listener import Waker

pytestmark = pytest.mark.timeout(10)  # a read of a reused blocking descriptor would hang


def test_a_closed_waker_never_touches_the_descriptors_the_process_reuses() -> None:
    waker = Waker()
    old = (waker.fileno(), waker._write)
    waker.close()
    read, write = os.pipe()  # takes the lowest free numbers: the ones just freed
    try:
        assert {read, write} == set(old)
        waker.wake()  # must not write into the new pipe
        waker.drain()  # must not read from it
        waker.close()  # must not close it
        os.set_blocking(read, False)
        os.write(write, b"mine")
        assert os.read(read, 16) == b"mine"  # still open, and nothing else was written to it
        assert waker.fileno() == -1
    finally:
        os.close(read)
        os.close(write)


def test_a_waker_wakes_until_it_is_closed() -> None:
    waker = Waker()
    try:
        waker.wake()
        waker.wake()
        os.set_blocking(waker.fileno(), False)
        assert os.read(waker.fileno(), 16) == b"xx"
    finally:
        waker.close()
