"""python -m tests.nemesis --duration SECONDS --seed S --out DIR [--nodes 5]"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from raftd.runtime.mutations import ENV as MUTATION_ENV
from raftd.runtime.mutations import MUTATIONS
from tests.nemesis.run import FAULT_KINDS, Plan, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.nemesis",
        description="Real members, real faults, a checked history. The last line is "
        "'<ops> ops, <faults> faults, linearizable: yes|no'; exit 0 only if every check "
        "passed.",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="where history.jsonl and logs go")
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    parser.add_argument(
        "--faults",
        help=f"comma-separated fault kinds instead of the seed's choice: {','.join(FAULT_KINDS)}",
    )
    parser.add_argument(
        "--mutation",
        choices=MUTATIONS,
        help="run the members with a deliberate bug (the harness must catch it)",
    )
    args = parser.parse_args(argv)
    kinds = args.faults.split(",") if args.faults else None
    if kinds and not set(kinds) <= set(FAULT_KINDS):
        parser.error(f"unknown fault kind in {args.faults}")
    plan = Plan.draw(args.seed, args.nodes, kinds)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"nemesis-{args.seed}-"))
    print(f"seed {plan.seed}: {plan.nodes} members, {plan.clients} clients, faults "
          f"{','.join(plan.kinds)}; output in {out}", flush=True)  # fmt: skip
    env = {MUTATION_ENV: args.mutation} if args.mutation else None
    outcome = trio.run(partial(run, member_env=env), plan, args.duration, out)
    for event in outcome.events:
        print(f"  {event}")
    for problem in outcome.problems:
        print(f"PROBLEM {problem}")
    print(outcome.summary_line())
    return 0 if not outcome.problems and outcome.linearizable == "linearizable" else 1


if __name__ == "__main__":
    sys.exit(main())
