"""Command line of the simulator: run many seeds, or replay one with a trace.

python -m tests.sim --seeds 200 [--start 0]      many seeds, a summary line last
python -m tests.sim --seed 17 --trace            replay one seed, one line per event
python -m tests.sim --seeds 500 --mutation forget-vote   prove a known bug is caught
python -m tests.sim --demo                       a calm 3-node story
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.sim.faults import FaultPlan
from tests.sim.mutations import MUTATIONS
from tests.sim.simulator import RunResult, Simulation


def run_seed(
    seed: int, *, mutation: str | None, nodes: int | None, trace: bool = False
) -> RunResult:
    import random

    plan = FaultPlan.draw(random.Random(seed), nodes=nodes)
    kwargs = {}
    if mutation is not None:
        m = MUTATIONS[mutation]
        kwargs = {"node_factory": m.node_factory, "storage_factory": m.storage_factory}
    sim = Simulation(seed, plan, trace=print if trace else None, **kwargs)  # type: ignore[arg-type]
    return sim.run()


def replay_command(seed: int, mutation: str | None, nodes: int | None) -> str:
    parts = [f"python -m tests.sim --seed {seed} --trace"]
    if mutation:
        parts.append(f"--mutation {mutation}")
    if nodes:
        parts.append(f"--nodes {nodes}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim",
        description="Deterministic Raft simulator: seeded faults, safety checked after every "
        "event, then a liveness phase. The same seed always replays the same run.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, help="run this many seeds, from --start")
    which.add_argument("--seed", type=int, help="run one seed (use --trace to see it)")
    which.add_argument("--demo", action="store_true", help="a calm 3-node cluster story")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds (0)")
    parser.add_argument("--trace", action="store_true", help="print one line per event")
    parser.add_argument("--nodes", type=int, choices=(3, 4, 5), help="fix the cluster size")
    parser.add_argument(
        "--mutation",
        choices=sorted(MUTATIONS),
        help="re-introduce a known bug, to show it is caught",
    )
    parser.add_argument(
        "--stop-on-violation", action="store_true", help="stop at the first failing seed"
    )
    args = parser.parse_args(argv)

    if args.demo:
        from tests.sim.demo import run_demo

        return run_demo()
    if args.seed is not None:
        result = run_seed(args.seed, mutation=args.mutation, nodes=args.nodes, trace=args.trace)
        print(
            f"SEED={result.seed} digest={result.digest} ticks={result.ticks} "
            f"events={result.events} messages={result.messages} proposals={result.proposals} "
            f"acknowledged={result.committed} crashes={result.crashes}"
        )
        if result.violation:
            print(f"VIOLATION {result.violation}")
            print(f"replay: {replay_command(result.seed, args.mutation, args.nodes)}")
            return 1
        return 0

    count = args.seeds if args.seeds is not None else 100
    print(
        f"options: --seeds {count} --start {args.start} nodes={args.nodes or '3-5'} "
        f"mutation={args.mutation or 'none'}",
        flush=True,
    )
    began = time.perf_counter()
    violations = 0
    for seed in range(args.start, args.start + count):
        result = run_seed(seed, mutation=args.mutation, nodes=args.nodes)
        if result.violation:
            violations += 1
            print(f"SEED={seed} VIOLATION {result.violation}", flush=True)
            print(f"  replay: {replay_command(seed, args.mutation, args.nodes)}", flush=True)
            if args.stop_on_violation:
                count = seed - args.start + 1
                break
    elapsed = time.perf_counter() - began
    print(f"rate: {count / elapsed * 60:.0f} seeds/minute ({elapsed:.1f} s)", file=sys.stderr)
    print(f"{count} seeds, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
