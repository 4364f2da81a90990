"""The project's linearizability checker for client histories (format: docs/testing.md).

The nemesis harness calls `check_history` in-process; people run `python -m tests.lincheck FILE`.
"""

from tests.lincheck.checker import CheckResult, KeyFailure, Verdict, check_history
from tests.lincheck.history import (
    MalformedHistory,
    Operation,
    dump_history,
    load_history,
    parse_history,
)

__all__ = [
    "CheckResult",
    "KeyFailure",
    "MalformedHistory",
    "Operation",
    "Verdict",
    "check_history",
    "dump_history",
    "load_history",
    "parse_history",
]
