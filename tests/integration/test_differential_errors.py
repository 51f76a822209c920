"""The reference schema refuses the same bad input and, like ours, keeps nothing of it."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.sql_bad_input import BAD_CALLS, BadCall, prepare
from tests.reference.driver import Db

pytestmark = pytest.mark.node


@pytest.mark.parametrize("bad", BAD_CALLS, ids=lambda b: b.id)
def test_reference_refuses_the_same_input(reference: Db, bad: BadCall) -> None:
    before = prepare(reference, bad)
    with pytest.raises(psycopg.Error) as caught:
        reference.call(bad.function, **bad.args)
    assert caught.value.sqlstate == (bad.reference_sqlstate or bad.sqlstate)
    assert reference.execute("sqlcore_row_counts") == [before]
