"""python -m tests.nemesis --duration SECONDS --seed S --out DIR [--nodes 5] [--extras K,...]"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from raftd.runtime.mutations import ENV as MUTATION_ENV
from raftd.runtime.mutations import MUTATIONS
from tests.integration.netns import unavailable
from tests.nemesis.run import EXTRA_KINDS, FAULT_KINDS, MEMBERSHIP_KINDS, STALE_TARGET, Plan, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.nemesis",
        description="Real members, real faults, a checked history (linearizability, and the "
        "bound of every stale read). The last line is '<ops> ops, <faults> faults, "
        "linearizable: yes|no, <n> stale reads within their bound (<m> refused)'; exit 0 "
        "only if every check passed.",
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
        "--extras",
        help="comma-separated extra kinds instead of the seed's choice (empty for none): "
        f"{','.join((*EXTRA_KINDS, *MEMBERSHIP_KINDS))}",
    )
    parser.add_argument(
        "--mutation",
        choices=MUTATIONS,
        help="run the members with a deliberate bug (the harness must catch it)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="mutual TLS on every port (default: as RAFTD_TEST_TLS says)",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="each member on a host of its own (network namespaces; needs root, ip and "
        "iptables): links go down and firewalls cut instead of proxies",
    )
    parser.add_argument(
        "--locks",
        action="store_true",
        help="also run lock users writing to a fenced resource, pause the lock's holder "
        "past its lease now and then, and check their history (tests/lincheck/locks.py)",
    )
    parser.add_argument(
        "--unfenced",
        action="store_true",
        help="with --locks: the lock users' resource ignores tokens (the checker must object)",
    )
    args = parser.parse_args(argv)
    kinds = args.faults.split(",") if args.faults else None
    if kinds and not set(kinds) <= set(FAULT_KINDS):
        parser.error(f"unknown fault kind in {args.faults}")
    extras = None if args.extras is None else [k for k in args.extras.split(",") if k]
    if extras and not set(extras) <= {*EXTRA_KINDS, *MEMBERSHIP_KINDS}:
        parser.error(f"unknown extra kind in {args.extras}")
    plan = Plan.draw(args.seed, args.nodes, kinds, extras)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"nemesis-{args.seed}-"))
    print(f"seed {plan.seed}: {plan.nodes} members, {plan.clients} clients, faults "
          f"{','.join(plan.all_kinds)}; values {'tiny and large' if plan.large_values else 'tiny'};"
          f" stale reads from {STALE_TARGET} within {plan.stale_bound_s} s;"
          f"{' TLS;' if args.tls else ''}{' hosts in namespaces;' if args.netns else ''}"
          f"{' lock users;' if args.locks else ''}"
          f" output in {out}",
          flush=True)  # fmt: skip
    env = {MUTATION_ENV: args.mutation} if args.mutation else None
    if args.netns and (why := unavailable()) is not None:
        parser.error(f"--netns: {why}")
    outcome = trio.run(
        partial(
            run,
            member_env=env,
            tls=args.tls,
            netns=args.netns,
            locks=args.locks or args.unfenced,
            unfenced=args.unfenced,
        ),
        plan,
        args.duration,
        out,
    )
    for event in outcome.events:
        print(f"  {event}")
    for problem in outcome.problems:
        print(f"PROBLEM {problem}")
    print(outcome.summary_line())
    return 0 if not outcome.problems and outcome.linearizable == "linearizable" else 1


if __name__ == "__main__":
    sys.exit(main())
