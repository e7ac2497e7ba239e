"""Checks that run two at a time on threads of the shared session.

A check of a few small queries keeps the driver busy planning one query after another, about one
core of two; two checks side by side keep both busy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def each(check: Callable[..., Any], cases: Iterable[Any]) -> list[Any]:
    """``check(case)`` for every case (a value, or a tuple of arguments), two at a time; their
    results in the order of ``cases``. The first case's failure is raised."""
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(check, *(case if isinstance(case, tuple) else (case,))) for case in cases]
        return [run.result() for run in runs]
