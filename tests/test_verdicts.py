"""The worker's remembered sandbox verdicts (worker/verdicts.py): a passed shape skips the parse,
and no text with a different verdict ever shares a passed text's shape."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from worker import verdicts
from worker.executor import QueryError
from worker.sandbox import check_worker_sql

CONE = ('SELECT objectId AS "_qe_c0" FROM {{dp02.Object|coord_dec,coord_ra,objectId}} AS Object '
        "WHERE qe_in_circle(coord_ra, coord_dec, %s, %s, 1 / 60.)")


def _verdict(sql: str) -> str:
    try:
        check_worker_sql(sql)
        return "ok"
    except QueryError as exc:
        return exc.code


def test_numeric_literals_outside_quotes_are_masked_and_nothing_else():
    assert verdicts.shape(CONE % ("10.5", "-30.25")) == verdicts.shape(CONE % ("359.999", "-1e-3"))
    assert verdicts.shape("SELECT log10(x2) FROM t1") == "SELECT log10(x2) FROM t1"
    assert verdicts.shape("SELECT 'a1', \"b 2\" FROM t WHERE x = 3") == "SELECT 'a1', \"b 2\" FROM t WHERE x = 0"
    assert verdicts.shape("SELECT 'it''s 5' FROM t") == "SELECT 'it''s 5' FROM t"


@pytest.mark.parametrize("sql", [
    "SELECT 1 -- comment", "SELECT /* 1 */ 1", "SELECT $$a$$", "SELECT 'a\\'", "SELECT 'unbalanced",
    'SELECT "x',
])
def test_texts_that_cannot_be_split_safely_are_never_remembered(sql):
    assert verdicts.shape(sql) is None


def test_a_passed_shape_skips_the_parse(monkeypatch):
    verdicts.check(CONE % ("1.0", "-2.0"))
    calls = []
    monkeypatch.setattr(verdicts, "check_worker_sql", lambda sql: calls.append(sql))
    verdicts.check(CONE % ("3.5", "-4.25"))
    assert calls == []
    verdicts.check(CONE.replace("coord_dec,", "") % ("3.5", "-4.25"))  # another shape: parsed
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT getenv('HOME') FROM {{dp02.Object}}",
    'WITH "c 1" AS (SELECT 1) SELECT * FROM "c 2"',
    "SELECT * FROM '/etc/passwd'",
])
def test_refusals_are_never_remembered(bad):
    for _ in range(2):
        with pytest.raises(QueryError):
            verdicts.check(bad)


_atoms = st.sampled_from([
    "1", "2.5", "1e3", ".5", "'1'", "'x 2'", '"c 1"', '"c 2"', "c1", "c2", "x", "(", ")", ",", "+",
    "SELECT", "FROM", "WHERE", "AS", "WITH", "{{dp02.Object}}", "read_csv", "getenv", "range",
    "'/etc/passwd'", "=", "*", ";", "abs",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_atoms, min_size=2, max_size=14), st.lists(_atoms, min_size=2, max_size=14))
def test_texts_of_one_shape_have_one_verdict(a, b):
    """Generated token soups: two texts with the same shape get the same verdict."""
    x, y = " ".join(a), " ".join(b)
    sx, sy = verdicts.shape(x), verdicts.shape(y)
    if sx is not None and sx == sy:
        assert _verdict(x) == _verdict(y), (x, y)
    pair = [x.replace("1", "7"), x]  # the same soup with other digits
    s0, s1 = verdicts.shape(pair[0]), verdicts.shape(pair[1])
    if s0 is not None and s0 == s1:
        assert _verdict(pair[0]) == _verdict(pair[1]), pair
