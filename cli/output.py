"""What raftctl prints, and the exit codes that tell a script what happened."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TextIO

from cli.client import ClientError, DefiniteError, Unavailable, UnknownOutcome

PROG = "raftctl"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3
EXIT_INTERRUPTED = 130


@dataclass(slots=True)
class Output:
    out: TextIO
    err: TextIO
    json: bool

    def result(self, obj: dict[str, Any], text: str | None) -> None:
        if self.json:
            self.out.write(json.dumps(obj) + "\n")
        elif text is not None:
            self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """Text mode only: JSON output carries the same facts as fields."""
        if not self.json:
            self.err.write(f"{PROG}: {text}\n")

    def failure(self, text: str) -> None:
        self.err.write(f"{PROG}: {text}\n")

    def error(self, exc: ClientError, *, write: bool) -> int:
        # Unavailable is definite (nothing happened) but, to a script, it is "try again
        # later", not "the answer is no", so it shares 3 with the unknown outcomes.
        refused = isinstance(exc, DefiniteError) and not isinstance(exc, Unavailable)
        code = EXIT_FAILED if refused else EXIT_UNKNOWN
        if self.json:
            body: dict[str, Any] = {
                "code": exc.code,
                "message": exc.message,
                "definite": exc.definite,
            }
            if exc.endpoint is not None:
                body["endpoint"] = exc.endpoint
            self.out.write(json.dumps({"error": body}) + "\n")
            return code
        if isinstance(exc, UnknownOutcome):
            consequence = (
                "the write may or may not have happened" if write else "no answer was received"
            )
            self.failure(f"{exc.message}: {consequence}")
        elif isinstance(exc, Unavailable):
            consequence = "nothing was written" if write else "nothing was read"
            self.failure(f"{exc.message} ({consequence})")
        else:
            where = f" by {exc.endpoint}" if exc.endpoint else ""
            self.failure(f"refused{where} ({exc.code}): {exc.message}")
        return code
