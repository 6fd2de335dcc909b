"""Counting SQL statements, to prove lists do not run one query per row."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass
class Counter:
    count: int = 0


@contextlib.contextmanager
def count_queries(database):
    counter = Counter()
    original = database.execute_sql

    def counting(sql, params=None, *args, **kwargs):
        counter.count += 1
        return original(sql, params, *args, **kwargs)

    database.execute_sql = counting
    try:
        yield counter
    finally:
        database.execute_sql = original
