"""Bad input raises on our schema exactly what it raises on the reference pgflow 0.8.1 schema.

The same SQLSTATE, message, detail (timestamps and generated ids aside), constraint, table and
column; the message is the one sql_bad_input.py records; neither schema keeps anything of the
failed call. The deliberate differences are in test_differential_divergences.py.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.sql_bad_input import BAD_CALLS, BadCall, prepare
from tests.reference.driver import Pair, diagnostics

pytestmark = pytest.mark.node


@pytest.mark.parametrize("bad", BAD_CALLS, ids=lambda b: b.id)
def test_same_error_as_the_reference(pair: Pair, bad: BadCall) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for db in pair.both:
        before = prepare(db, bad)
        with pytest.raises(psycopg.Error) as caught:
            db.call(bad.function, **bad.args)
        seen[db.name] = diagnostics(caught.value)
        assert db.execute("sqlcore_row_counts") == [before], db.name
    reference = seen["reference"]
    assert (reference["sqlstate"], reference["message_primary"]) == (bad.sqlstate, bad.message)
    assert seen["ours"] == reference
