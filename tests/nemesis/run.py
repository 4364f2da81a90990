"""A Jepsen-style run: real members, real faults, every client operation recorded and checked.

One seed decides which faults a run uses and when: kill -9 (of any member or of the
leader) with a restart, SIGSTOP of the leader, partitions cut at the per-link TCP proxies
(the leader isolated, a minority cut off, one direction of one link), message drop and
delay, a slow disk. Six to sixteen clients run get/set/cas over ten keys meanwhile, every
written value unique, each operation written to the history the moment it completes.
After the faults the cluster heals, traffic runs on, every key is read through the
linearizable path, and then:

* the history must be linearizable (tests/lincheck, the format of shared/lincheck);
* every member must reach the same applied index and the same state hash (data and
  client sessions);
* clients must have made progress both before the first fault and after the heal (a run
  without traffic proves nothing and fails);
* each injected fault must show it happened (the leader changed, the process restarted);
* members snapshot every few hundred entries, so compaction and InstallSnapshot are
  always part of the run;
* no member may exit unless the nemesis killed it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import trio

from cli.client import Client, ClientError, DefiniteError, Unavailable, UnknownOutcome
from raftd.kv import prefix_end
from tests.integration.harness import ROOT, Cluster, running
from tests.integration.netns import NetnsCluster
from tests.lincheck.locks import check_locks
from tests.lincheck.revisions import check_revisions
from wire.api import MemberChangeRequest, StateHashRequest, StatusReply, WatchEvent

KEYS = [f"k{i}" for i in range(10)]
FAULT_KINDS = (
    "kill",
    "kill_leader",
    "pause_leader",
    "isolate_leader",
    "partition_minority",
    "one_way",
    "drop_delay",
    "slow_fsync",
    "kill_all",
)
START_KINDS = {"drop_delay", "slow_fsync", "slow_follower"}  # chaos set when members start
MIN_OPS_PER_S = 3.0
# Drawn apart from FAULT_KINDS (by a generator of their own), so the seeds the CI pins keep
# their faults. lag_large: a follower is down while hundreds of large values are written,
# then must catch up (large catch-ups once killed every leader in turn); pause_follower and
# slow_follower: the member the stale readers ask is stopped, or its disk is slow.
EXTRA_KINDS = ("lag_large", "pause_follower", "slow_follower")
# Leadership and membership, drawn by a third generator for the same reason: move_leader
# asks the leader to hand over to a random member (raftctl move-leader), sigterm_leader
# stops the leader with SIGTERM (it hands over first) and restarts it, as a rolling restart
# would; replace_member removes a follower, wipes its disk, adds it back as a new member
# (a new id) with --join as a learner, and promotes it once it has caught up.
MEMBERSHIP_KINDS = ("move_leader", "sigterm_leader", "replace_member")
STALE_BOUNDS_S = (0.2, 0.5, 1.0)
STALE_TARGET = "n3"  # the member a stale reader asks and the extra faults aim at
LARGE_VALUE_BYTES = (20_000, 60_000)
LAG_WRITES = 300
LAG_WRITE_S = 15.0
LAG_WRITES_EVIDENCE = 100  # fewer, and the fault proved nothing
SHORT_VALUE_CHARS = 96
SNAPSHOT_ENTRIES = 300
SNAPSHOT_KEEP = 50
# With locks: lock user processes (tests/nemesis/lockuser.py) on short leases, and a share
# of the strikes pausing whichever of them holds the lock for longer than its lease.
RANGE_SHARE = 0.05  # of a client's operations: a range read of every key
LOCK_USERS = 3
LOCK_TTL_S = 2
LOCK_PAUSE_SHARE = 0.3
LOCK_PAUSE_TRIES = 50


@dataclass
class Plan:
    seed: int
    nodes: int
    clients: int
    kinds: list[str]
    extras: list[str] = field(default_factory=list)
    large_values: bool = False  # a fifth of the writes carry 20-60 kB
    stale_bound_s: float = 0.5  # of the stale readers' gets

    @classmethod
    def draw(
        cls, seed: int, nodes: int, kinds: list[str] | None = None, extras: list[str] | None = None
    ) -> Plan:
        rng = random.Random(seed)
        chosen = kinds or rng.sample(FAULT_KINDS, rng.randint(2, 4))
        clients = rng.randint(6, 16)
        side = random.Random(seed * 1009 + 5)
        drawn = [kind for kind in EXTRA_KINDS if side.random() < 0.4]
        large = side.random() < 0.5
        bound = side.choice(STALE_BOUNDS_S)
        transfers = random.Random(seed * 2003 + 7)
        drawn += [kind for kind in MEMBERSHIP_KINDS if transfers.random() < 0.4]
        return cls(seed, nodes, clients, chosen, drawn if extras is None else extras, large, bound)

    @property
    def all_kinds(self) -> list[str]:
        return [*self.kinds, *self.extras]


@dataclass
class Outcome:
    ops: int = 0
    faults: int = 0
    problems: list[str] = field(default_factory=list)
    linearizable: str = "unknown"
    events: list[str] = field(default_factory=list)
    stale_reads: int = 0  # verified within their bound by the checker's staleness pass
    stale_refused: int = 0  # answered too_stale: the member could not promise the bound
    locks: str = ""  # the lock checker's verdict line, when lock users ran
    lock_overlaps: int = 0  # holds a newer holder overlapped (the pauses that landed)
    lock_fenced: int = 0  # writes the fenced resource refused for an old token

    def summary_line(self) -> str:
        verdict = {"linearizable": "yes", "not linearizable": "no"}.get(
            self.linearizable, self.linearizable
        )
        line = (
            f"{self.ops} ops, {self.faults} faults, linearizable: {verdict}, "
            f"{self.stale_reads} stale reads within their bound ({self.stale_refused} refused)"
        )
        return f"{line}; {self.locks}" if self.locks else line


def short_value(value: str) -> str:
    """A large value as it goes into the history: its head, its length and a digest.

    Every written value is unique, and so is this stand-in, so the checker's equalities
    are unchanged; written whole, 600 s of large values made a 5 GB history."""
    if len(value) <= SHORT_VALUE_CHARS:
        return value
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    return f"{value[:32]}...[{len(value)} chars, {digest}]"


class History:
    """Operations as they complete, in the shared history format, straight to disk."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.ops = 0
        self.ok_times: list[float] = []
        self.top_revision = 0  # the highest revision a recorded write got

    def record(self, op: dict[str, Any]) -> None:
        for field_name in ("value", "output", "expected"):
            if isinstance(op.get(field_name), str):
                op[field_name] = short_value(op[field_name])
        self._out.write(json.dumps(op, separators=(",", ":")) + "\n")
        self.ops += 1
        self.top_revision = max(self.top_revision, (op.get("meta") or {}).get("revision", 0))
        if op.get("outcome", "ok") == "ok":
            self.ok_times.append(time.monotonic())

    def rate(self, start: float, end: float) -> float:
        count = sum(1 for t in self.ok_times if start <= t < end)
        return count / max(end - start, 1e-9)


async def client_loop(
    name: str,
    endpoints: list[str],
    history: History,
    rng: random.Random,
    stop: trio.Event,
    *,
    reader: bool = False,
    large_values: bool = False,
    tls: ssl.SSLContext | None = None,
    ranges: bool = True,
) -> None:
    """One client session, one operation at a time (a few of them reads of every key at
    once, a range). A ``reader`` only reads, from the one
    member it was given: a correct member redirects it to the leader, a member that
    answered linearizable reads from local state would be caught by its stale answers."""
    seen: dict[str, str | None] = {}
    counter = 0
    async with Client(
        endpoints, timeout_s=2.0, attempt_timeout_s=0.5, client_id=name, tls=tls
    ) as c:
        while not stop.is_set():
            key = rng.choice(KEYS)
            roll = 0.0 if reader else rng.random()
            counter += 1
            value = f"{name}-{counter}"
            if large_values and rng.random() < 0.2:
                value += "." * rng.randint(*LARGE_VALUE_BYTES)
            call = time.monotonic_ns()
            op: dict[str, Any] = {"client": name, "key": key, "call": call}
            try:
                if ranges and not reader and roll < RANGE_SHARE:
                    # One read of every key at one revision: recorded as a get of each key
                    # over the same interval (each must be linearizable on its own).
                    try:
                        page = await c.range("k", prefix_end("k"))
                    except ClientError:
                        continue  # a read that got no answer says nothing
                    done = time.monotonic_ns()
                    found = {item.key: item for item in page.items}
                    for each in KEYS:
                        item = found.get(each)
                        history.record(
                            {"client": name, "op": "get", "key": each, "call": call,
                             "output": None if item is None else item.value, "return": done,
                             "meta": {"mod_revision": 0 if item is None else item.mod_revision}}
                        )  # fmt: skip
                    continue
                if roll < 0.5:
                    op["op"] = "get"
                    got = await c.get(key)
                    op["output"] = got.value if got.found else None
                    op["meta"] = {"mod_revision": got.mod_revision}
                    seen[key] = op["output"]
                elif roll < 0.83:
                    op.update(op="set", value=value)
                    written = await c.set(key, value)
                    op["meta"] = {"revision": written.index}
                    seen[key] = value
                else:
                    expected = seen.get(key)
                    op.update(op="cas", value=value, expected=expected)
                    reply = await c.cas(key, expected, value)
                    op["ok"] = reply.ok
                    if reply.ok:
                        op["meta"] = {"revision": reply.index}
                    seen[key] = value if reply.ok else reply.value
                op["return"] = time.monotonic_ns()
            except Unavailable:
                # Provably never sent anywhere: it cannot have taken effect.
                if op["op"] == "get":
                    op["outcome"] = "unknown"
                else:
                    op.update(outcome="fail", **{"return": time.monotonic_ns()})
            except (UnknownOutcome, ClientError):
                op["outcome"] = "unknown"
            history.record(op)


async def watch_loop(
    endpoints: list[str],
    into: list[WatchEvent],
    stop: trio.Event,
    history: History,
    tls: ssl.SSLContext | None,
    outcome: Outcome,
) -> None:
    """Every change to the clients' keys from revision 1 on, through every fault: a watch
    resumes on another member when its own is killed, cut off or paused."""
    async with Client(endpoints, timeout_s=2.0, attempt_timeout_s=0.5, tls=tls) as client:
        with trio.CancelScope() as scope:
            changes = client.watch("k", prefix_end("k"), start_revision=1)
            try:
                async with (
                    contextlib.aclosing(changes) as events,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(_cancel_when_caught_up, stop, scope, into, history)
                    async for event in events:
                        into.append(event)
            except DefiniteError as exc:  # compacted everywhere: it fell too far behind
                outcome.problems.append(f"watch: {exc.message}")


async def _cancel_when_caught_up(
    stop: trio.Event, scope: trio.CancelScope, into: list[WatchEvent], history: History
) -> None:
    """Once the clients stop, wait (10 s at most) for the watch to deliver the last write
    they recorded, then end it: the check covers the changes up to the last delivered."""
    await stop.wait()
    with trio.move_on_after(10):
        while not into or into[-1].revision < history.top_revision:
            await trio.sleep(0.05)
    scope.cancel()


def check_watch(events: list[WatchEvent], ops: list[dict[str, Any]]) -> list[str]:
    """The watch saw changes in revision order, none twice, each one a write the clients
    made (value and revision), and missed none of the writes known to have happened, up
    to the last revision it saw."""
    problems: list[str] = []
    if not events:
        return ["the watcher saw no change at all"]
    seen: set[tuple[int, str]] = set()
    last = 0
    for event in events:
        if event.revision < last:
            problems.append(f"revision {event.revision} came after {last}")
        if (event.revision, event.key) in seen:
            problems.append(f"{event.key} at revision {event.revision} was delivered twice")
        seen.add((event.revision, event.key))
        last = max(last, event.revision)
    written = {
        op["meta"]["revision"]: (op["key"], op["value"])
        for op in ops
        if op.get("op") in ("set", "cas") and "revision" in (op.get("meta") or {})
    }
    by_revision = {e.revision: (e.key, short_value(e.value or "")) for e in events}
    for revision, (key, value) in written.items():
        if revision > last:
            continue
        got = by_revision.get(revision)
        if got is None:
            problems.append(f"the write of {key} at revision {revision} was never delivered")
        elif got != (key, value):
            problems.append(
                f"revision {revision} was delivered as {got}, written as {(key, value)}"
            )
    return problems


async def stale_reader_loop(
    name: str,
    endpoint: str,
    history: History,
    rng: random.Random,
    stop: trio.Event,
    bound_s: float,
    outcome: Outcome,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Bounded-staleness gets from one member, each recorded with its bound: the checker's
    staleness pass then verifies every answer was current within [call - bound, return].
    A refusal (too_stale) or no answer says nothing about the bound and is not recorded."""
    async with Client(
        [endpoint], timeout_s=2.0, attempt_timeout_s=0.5, client_id=name, tls=tls
    ) as c:
        while not stop.is_set():
            key = rng.choice(KEYS)
            call = time.monotonic_ns()
            try:
                got = await c.get(key, max_staleness_s=bound_s)
            except DefiniteError as exc:
                if exc.code == "too_stale":
                    outcome.stale_refused += 1
                await trio.sleep(0.02)
                continue
            except ClientError:
                await trio.sleep(0.02)
                continue
            history.record(
                {"client": name, "op": "get", "key": key, "call": call,
                 "output": got.value if got.found else None, "return": time.monotonic_ns(),
                 "max_staleness_ns": round(bound_s * 1e9)}
            )  # fmt: skip


# Faults that take the leader away long enough that the others must elect a new one.
LEADER_LOSING_KINDS = ("kill_leader", "pause_leader", "isolate_leader")
# How long the leader must be gone before a new term is certain: the first follower to time
# out (0.5-1 s) may be refused by the other, still inside its lease, so it can take the
# second one's timeout too (up to 2 s), plus the rounds of pre-vote and vote. At 1.6 s the
# check failed about one run in five on a loaded machine with nothing wrong.
MIN_HOLD_FOR_NEW_TERM_S = 2.5


class Nemesis:
    def __init__(self, cluster: Cluster, plan: Plan, outcome: Outcome) -> None:
        self.cluster = cluster
        self.plan = plan
        self.outcome = outcome
        self.rng = random.Random(plan.seed * 7 + 1)
        self.killed_by_us: set[str] = set()
        self.lag_rounds = 0
        self.replaced = False  # a member was added back (see strike)
        self.lock_users: dict[str, trio.Process] = {}  # with locks: name -> its process
        self.lock_history_dir = Path()  # where their histories are (run's out)

    def note(self, text: str) -> None:
        self.outcome.events.append(f"{time.monotonic():.3f} {text}")

    async def leader(self) -> str:
        return await self.cluster.wait_for_leader(timeout_s=30)

    async def strike(self) -> None:
        if self.lock_users and self.rng.random() < LOCK_PAUSE_SHARE:
            await self._pause_lock_holder()
            return
        kinds = [k for k in self.plan.all_kinds if k not in START_KINDS]
        if not kinds:
            await trio.sleep(self.rng.uniform(1, 2))
            return
        kind = self.rng.choice(kinds)
        hold = self.rng.uniform(1.0, 3.0)
        cluster = self.cluster
        before = await self.leader()
        # Its role and term from one reply: "the leader" named a moment ago may already
        # have lost an election (a member rejoining after the last fault), and then a
        # fault aimed at it takes no leader away and proves nothing about new terms. Two
        # requests (who leads, then its term) once read a term-4 leader and the term 5 it
        # had learnt as a follower, and reported "no new term" while n1 led in term 5.
        leading = (await cluster.statuses([before])).get(before)
        term_before = leading.term if leading is not None and leading.role == "leader" else None
        self.outcome.faults += 1
        top_while_out: int | None = None  # the others' highest term as the fault ends
        if kind in ("kill", "kill_leader"):
            victim = before if kind == "kill_leader" else self.rng.choice(list(cluster.members))
            self.note(f"kill -9 {victim}")
            self.killed_by_us.add(victim)
            await cluster.kill(victim)
            await trio.sleep(hold)
            top_while_out = await self._top_term(excluding=victim)
            await cluster.start_member(victim)
            self.killed_by_us.discard(victim)
            self.note(f"restarted {victim}")
        elif kind == "kill_all":
            self.note(f"kill -9 every member, restart after {hold:.1f} s")
            for name in cluster.members:
                self.killed_by_us.add(name)
                await cluster.kill(name)
            await trio.sleep(hold)
            for name in cluster.members:
                await cluster.start_member(name)
                self.killed_by_us.discard(name)
        elif kind == "pause_leader":
            self.note(f"SIGSTOP {before} for {hold:.1f} s")
            cluster.pause(before)
            await trio.sleep(hold)
            top_while_out = await self._top_term(excluding=before)
            cluster.resume(before)
        elif kind == "isolate_leader":
            self.note(f"isolate {before} for {hold:.1f} s")
            await cluster.isolate(before)
            await trio.sleep(hold)
            top_while_out = await self._top_term(excluding=before)
            cluster.heal()
        elif kind == "partition_minority":
            minority = self.rng.choice(list(cluster.members))
            self.note(f"cut off {minority} for {hold:.1f} s")
            await cluster.isolate(minority)
            await trio.sleep(hold)
            cluster.heal()
        elif kind == "pause_follower":
            victim = STALE_TARGET if before != STALE_TARGET else self._follower(before)
            self.note(f"SIGSTOP follower {victim} for {hold:.1f} s")
            cluster.pause(victim)
            await trio.sleep(hold)
            cluster.resume(victim)
        elif kind == "lag_large":
            await self._lag_large(before)
        elif kind == "move_leader":
            await self._move_leader(before)
        elif kind == "replace_member":
            await self._replace_member(before)
        elif kind == "sigterm_leader":
            self.note(f"SIGTERM {before}, restart after {hold:.1f} s")
            self.killed_by_us.add(before)
            status = await cluster.stop(before)
            if status != 0:
                self.outcome.problems.append(f"sigterm_leader: {before} exited {status}")
            await trio.sleep(hold)
            await cluster.start_member(before)
            self.killed_by_us.discard(before)
        elif kind == "one_way":
            other = self.rng.choice([n for n in cluster.members if n != before])
            src, dst = (before, other) if self.rng.random() < 0.5 else (other, before)
            self.note(f"cut {src} -> {dst} for {hold:.1f} s")
            await cluster.cut_one_way(src, dst)
            await trio.sleep(hold)
            cluster.heal()
        after = await self.leader()
        self.note(f"leader {before} -> {after}")
        # Evidence the fault struck: a leader killed for long enough cannot lead again this
        # soon (the others elected one while it was down, and it came back a follower). After
        # a shorter kill it may come back before anyone timed out, and win.
        if kind == "kill_leader" and after == before and hold >= MIN_HOLD_FOR_NEW_TERM_S:
            self.outcome.problems.append(f"{kind}: the leader {before} was still leading")
        # A leader taken away for longer than the longest election timeout plus an election
        # is replaced in a new term: if the term did not move, the fault never reached the
        # cluster (a proxy that did not cut, a signal lost). Shorter holds may or may not
        # see an election, so they prove nothing either way.
        # A member added back by replace_member is reached at its own port, not through the
        # proxies (the configuration holds one address for everyone), so isolating the
        # leader no longer cuts the leader's link to it: then the leader may keep leading.
        cut_whole = kind != "isolate_leader" or not self.replaced
        if kind in LEADER_LOSING_KINDS and hold >= MIN_HOLD_FOR_NEW_TERM_S and cut_whole:
            # The others' term is read before the leader comes back, and every member's
            # after: a status request that times out under load must not hide an election.
            statuses = await self.cluster.statuses()
            terms = [s.term for s in statuses.values()]
            if top_while_out is not None:
                terms.append(top_while_out)
            if term_before is not None and terms and max(terms) <= term_before:
                seen = ", ".join(
                    f"{name} {s.role} term {s.term}" for name, s in sorted(statuses.items())
                )
                self.outcome.problems.append(
                    f"{kind}: no new term while {before} was out (term {term_before}; "
                    f"the others' top term as it ended: {top_while_out}; after: {seen})"
                )

    async def _pause_lock_holder(self) -> None:
        """Kleppmann's GC pause: the process holding the lock stops, keepalives and all,
        for longer than its lease; the next waiter takes the lock; the paused one wakes up
        believing it still holds it. Only the fenced resource's tokens stop its writes.

        The holder is paused between its acquisition and its first write: its history
        ends in the acquisition (so it knows it holds the lock, which the first key under
        the lock does not tell), and a write is sure to follow its wake-up. It is stopped,
        and its history read again: one that moved on in between is let go on at once and
        another try made."""
        for _ in range(LOCK_PAUSE_TRIES):
            holder = self._holding_lock_user()
            if holder is None:
                await trio.sleep(0.05)
                continue
            process = self.lock_users[holder]
            process.send_signal(signal.SIGSTOP)
            if self._holding_lock_user() != holder:
                process.send_signal(signal.SIGCONT)
                continue
            self.outcome.faults += 1
            hold = LOCK_TTL_S * 2 + self.rng.uniform(0.5, 2.0)
            self.note(f"SIGSTOP lock holder {holder} for {hold:.1f} s")
            await trio.sleep(hold)
            process.send_signal(signal.SIGCONT)
            return
        self.note("pause lock holder: no holder stayed put long enough to be paused")

    def _holding_lock_user(self) -> str | None:
        for name, process in self.lock_users.items():
            if process.returncode is not None:
                continue
            path = self.lock_history_dir / f"locks-{name}.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            if lines and json.loads(lines[-1])["op"] == "acquire":
                return name
        return None

    async def _move_leader(self, leader: str) -> None:
        target = self._follower(leader)
        self.note(f"move-leader {leader} -> {target}")
        async with Client(
            self.cluster.endpoints, timeout_s=5.0, client_id="mover", tls=self.cluster.client_tls
        ) as client:
            try:
                reply = await client.move_leader(target)
                self.note(f"move-leader: {reply.leader} leads in term {reply.term}")
            except ClientError as exc:  # aborted under faults: the leader stays; fine
                self.note(f"move-leader: {exc}")
        await trio.sleep(self.rng.uniform(0.5, 1.5))

    async def _replace_member(self, leader: str) -> None:
        """A machine replaced: remove a follower, wipe its data, add it back as a new member
        that joins as a learner, promote it once caught up."""
        cluster = self.cluster
        candidates = [n for n in cluster.members if n not in (leader, STALE_TARGET)]
        if not candidates:
            return
        victim = self.rng.choice(candidates)
        member = cluster.members[victim]
        self.note(f"replace {victim}: remove, wipe, add as a learner, promote")
        self.killed_by_us.add(victim)
        async with Client(
            cluster.endpoints, timeout_s=10.0, client_id="membership", tls=cluster.client_tls
        ) as c:
            if not await self._changed(c, MemberChangeRequest("remove", victim), victim, False):
                self.killed_by_us.discard(victim)
                return
            status = await cluster.wait_exit(victim, timeout_s=20)
            if status is None:
                # It learns of its removal only from a leader in the few election timeouts
                # after the change commits; under faults it may not: stopped by hand, as
                # an operator would (docs/operations).
                self.note(f"{victim} did not learn of its removal: stopped by hand")
                await cluster.kill(victim)
            elif status != 0:
                self.outcome.problems.append(f"replace_member: removed {victim} exited {status}")
            shutil.rmtree(member.data_dir, ignore_errors=True)
            if "--join" not in member.extra_args:
                member.extra_args.append("--join")
            add = MemberChangeRequest("add", victim, member.peer_addr, member.client_addr, True)
            if not await self._changed(c, add, victim, True):
                self.outcome.problems.append(f"replace_member: could not add {victim} back")
                return
            await cluster.start_member(victim)
            self.killed_by_us.discard(victim)
            self.replaced = True
            deadline = trio.current_time() + 60
            while trio.current_time() < deadline:
                try:
                    await c.change_members(MemberChangeRequest("promote", victim))
                    self.note(f"{victim} promoted")
                    return
                except ClientError as exc:  # catching up, or an answer lost to a new leader
                    if await self._is_voter(c, victim):
                        self.note(f"{victim} promoted (the answer was lost: {exc})")
                        return
                    await trio.sleep(0.5)
            self.outcome.problems.append(f"replace_member: {victim} not promoted within 60 s")

    async def _is_voter(self, client: Client, name: str) -> bool:
        try:
            listed = await client.member_list()
        except ClientError:
            return False
        return any(m.name == name and m.role == "voter" for m in listed.members)

    async def _changed(
        self, client: Client, request: MemberChangeRequest, name: str, present: bool
    ) -> bool:
        """Ask for a change until the member list says it took effect (a change whose
        answer was lost may have committed all the same)."""
        for _ in range(10):
            try:
                await client.change_members(request)
                return True
            except ClientError as exc:
                self.note(f"{request.action} {name}: {exc}")
            try:
                listed = await client.member_list()
                if (name in {m.name for m in listed.members}) == present:
                    return True
            except ClientError:
                pass
            await trio.sleep(1.0)
        return False

    def _follower(self, leader: str) -> str:
        return self.rng.choice([n for n in self.cluster.members if n != leader])

    async def _lag_large(self, leader: str) -> None:
        """A follower misses hundreds of large writes, then must catch up with them."""
        cluster = self.cluster
        victim = self._follower(leader)
        if "slow_follower" in self.plan.extras and leader != STALE_TARGET:
            victim = STALE_TARGET  # the others write fast; the slow disk then catches up
        self.note(f"kill -9 {victim} while {LAG_WRITES} large values are written")
        self.killed_by_us.add(victim)
        await cluster.kill(victim)
        written = 0
        # Sessions of their own each round: a session's numbers restart at 1 in a new
        # Client, and the member rightly answered a reused id's "stale sequence number", so
        # every round after the first once wrote 8 values instead of 300.
        self.lag_rounds += 1
        round_id = self.lag_rounds
        # Eight writers at once, for at most LAG_WRITE_S: with the lagging member down the
        # others must all acknowledge, and a slow disk among them makes each write slow.
        give_up = trio.current_time() + LAG_WRITE_S

        async def writer(lane: int) -> None:
            nonlocal written
            async with Client(
                cluster.endpoints,
                timeout_s=5.0,
                client_id=f"lag{round_id}-{lane}",
                tls=cluster.client_tls,
            ) as c:
                for n in range(lane, LAG_WRITES, 8):
                    if trio.current_time() > give_up:
                        return
                    value = f"lag-{self.plan.seed}-{n}-" + "L" * 40_000
                    try:
                        await c.set(f"lag{lane}", value)
                        written += 1
                    except ClientError:
                        pass  # unknown or refused: no key the checker reads

        async with trio.open_nursery() as writers:
            for lane in range(8):
                writers.start_soon(writer, lane)
        missed = max((s.commit_index for s in (await cluster.statuses()).values()), default=0)
        await cluster.start_member(victim)
        self.killed_by_us.discard(victim)
        # Caught up once it applied what it missed: under ongoing traffic it always trails
        # the newest commit a little (its own disk may be the slow one).
        deadline = trio.current_time() + 60
        while True:
            status = (await cluster.statuses([victim])).get(victim)
            if status is not None and status.last_applied >= missed:
                break
            if trio.current_time() > deadline:
                self.outcome.problems.append(
                    f"lag_large: {victim} did not apply the {missed} entries it missed in 60 s"
                )
                break
            await trio.sleep(0.2)
        self.note(f"{victim} caught up after {written} large writes")
        # With the slow-disk member leading, every write waits for its fsync (200-800 ms):
        # few get through in the round's 15 s, and that says nothing about the catch-up.
        slow_leader = "slow_follower" in self.plan.extras and leader == STALE_TARGET
        if written < LAG_WRITES_EVIDENCE and not slow_leader:
            self.outcome.problems.append(
                f"lag_large: only {written} large writes acknowledged while {victim} was "
                f"down (at least {LAG_WRITES_EVIDENCE} make a catch-up worth the name)"
            )

    async def _top_term(self, excluding: str) -> int | None:
        statuses = await self.cluster.statuses([n for n in self.cluster.members if n != excluding])
        return max((s.term for s in statuses.values()), default=None)


async def _start_lock_users(
    nemesis: Nemesis, cluster: Cluster, out: Path, *, unfenced: bool
) -> None:
    nemesis.lock_history_dir = out
    for i in range(LOCK_USERS):
        name = f"l{i}"
        argv = [sys.executable, "-m", "tests.nemesis.lockuser", name,
                str(out / f"locks-{name}.jsonl"), "--endpoints", ",".join(cluster.endpoints),
                "--ttl", str(LOCK_TTL_S)]  # fmt: skip
        if cluster.tls_dir is not None:
            argv += ["--tls", str(cluster.tls_dir)]
        if unfenced:
            argv.append("--unfenced")
        with (out / f"lockuser-{name}.log").open("ab") as log_file:
            nemesis.lock_users[name] = await trio.lowlevel.open_process(
                argv, cwd=ROOT, stdout=log_file, stderr=log_file
            )


@contextlib.contextmanager
def _killed_at_exit(processes: dict[str, trio.Process]) -> Iterator[None]:
    """Lock users are not the harness' members: whatever ends the run ends them too."""
    try:
        yield
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.kill()


async def _stop_lock_users(nemesis: Nemesis) -> None:
    for process in nemesis.lock_users.values():
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
    for name, process in nemesis.lock_users.items():
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
            nemesis.outcome.problems.append(f"lock user {name} did not stop on SIGTERM")


def _check_lock_histories(out: Path, outcome: Outcome) -> None:
    rows = []
    for path in sorted(out.glob("locks-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result = check_locks(rows)
    outcome.locks = (
        f"locks: {'safe' if result.ok else 'UNSAFE'}, {result.acquisitions} acquisitions, "
        f"{result.overlaps} overlapping holds, {result.fenced} writes fenced off"
    )
    outcome.lock_overlaps, outcome.lock_fenced = result.overlaps, result.fenced
    outcome.problems += [f"locks: {problem}" for problem in result.problems[:10]]
    if result.acquisitions == 0:
        outcome.problems.append("locks: no lock was ever acquired")


async def converge(cluster: Cluster, outcome: Outcome) -> None:
    """Every member at the same applied index with the same state hash."""
    deadline = trio.current_time() + 30
    while True:
        replies: dict[str, StatusReply] = {}
        for name in cluster.members:
            try:
                reply = await cluster.request(name, StateHashRequest(), timeout_s=2)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, AssertionError):
                continue
            if isinstance(reply, StatusReply):
                replies[name] = reply
        applied = {r.last_applied for r in replies.values()}
        hashes = {r.state_hash for r in replies.values()}
        if len(replies) == len(cluster.members) and len(applied) == 1 and len(hashes) == 1:
            return
        if trio.current_time() > deadline:
            outcome.problems.append(
                "no convergence: "
                + ", ".join(
                    f"{n} applied {r.last_applied} hash {(r.state_hash or '')[:12]}"
                    for n, r in sorted(replies.items())
                )
            )
            return
        await trio.sleep(0.2)


async def run(
    plan: Plan,
    duration_s: float,
    out: Path,
    *,
    member_env: dict[str, str] | None = None,
    tls: bool | None = None,
    netns: bool = False,
    locks: bool = False,
    unfenced: bool = False,
) -> Outcome:
    """``tls``: every port with mutual TLS (None: as RAFTD_TEST_TLS says). ``netns``:
    every member on a host of its own (tests/integration/netns.py), the partitions made by
    links going down and firewall rules instead of proxies. ``locks``: lock user processes
    write to a fenced resource, and some strikes pause the lock's holder past its lease;
    their histories go to the lock checker (tests/lincheck/locks.py); ``unfenced`` makes
    their resource ignore tokens, a bug the checker must catch."""
    outcome = Outcome()
    out.mkdir(parents=True, exist_ok=True)
    hosts = NetnsCluster if netns else Cluster
    cluster = hosts(out / "members", plan.nodes, tls=tls)
    for member in cluster.members.values():
        if "drop_delay" in plan.kinds:
            member.env.update(
                RAFTD_CHAOS_DROP_PERCENT="5",
                RAFTD_CHAOS_DELAY_PERCENT="20",
                RAFTD_CHAOS_DELAY_MS="5-50",
                RAFTD_CHAOS_SEED=str(plan.seed),
            )
        if "slow_fsync" in plan.kinds:
            member.env["RAFTD_CHAOS_FSYNC_DELAY_MS"] = "2-20"
        if "slow_follower" in plan.extras and member.name == STALE_TARGET:
            member.env["RAFTD_CHAOS_FSYNC_DELAY_MS"] = "200-800"
        # Snapshots every few hundred entries, so every run compacts many times and a
        # member killed or cut off for a moment comes back through InstallSnapshot.
        member.env["RAFTD_SNAPSHOT_ENTRIES"] = str(SNAPSHOT_ENTRIES)
        member.env["RAFTD_SNAPSHOT_KEEP"] = str(SNAPSHOT_KEEP)
        member.env["RAFTD_WAL_SEGMENT_MB"] = "1"
        member.env.update(member_env or {})
    history_path = out / "history.jsonl"
    nemesis = Nemesis(cluster, plan, outcome)
    watched: list[WatchEvent] = []
    with history_path.open("w") as history_file, _killed_at_exit(nemesis.lock_users):
        history = History(history_file)
        async with trio.open_nursery() as nursery, running(cluster, nursery):
            stop = trio.Event()
            if locks:
                await _start_lock_users(nemesis, cluster, out, unfenced=unfenced)
            rng = random.Random(plan.seed)
            async with trio.open_nursery() as clients:
                for i in range(plan.clients):
                    endpoints = cluster.endpoints
                    shift = i % len(endpoints)  # clients start at different members
                    reader = i % 3 == 2  # a third of the clients: reads from one member
                    clients.start_soon(
                        partial(
                            client_loop,
                            f"c{i}",
                            [endpoints[shift]] if reader else endpoints[shift:] + endpoints[:shift],
                            history,
                            random.Random(rng.getrandbits(64)),
                            stop,
                            reader=reader,
                            large_values=plan.large_values,
                            tls=cluster.client_tls,
                        )
                    )
                # A watcher of every key, from the first revision, across every fault.
                clients.start_soon(
                    watch_loop,
                    cluster.endpoints,
                    watched,
                    stop,
                    history,
                    cluster.client_tls,
                    outcome,
                )
                # One stale reader asks the member the extra faults aim at, one another.
                for i, asked in enumerate((STALE_TARGET, "n2")):
                    clients.start_soon(
                        stale_reader_loop,
                        f"s{i}",
                        cluster.members[asked].client_addr,
                        history,
                        random.Random(rng.getrandbits(64)),
                        stop,
                        plan.stale_bound_s,
                        outcome,
                        cluster.client_tls,
                    )
                began = time.monotonic()
                await trio.sleep(2.0)
                first_fault = time.monotonic()
                if history.rate(began, first_fault) < MIN_OPS_PER_S:
                    outcome.problems.append("too little traffic before the first fault")
                while time.monotonic() - began < duration_s:
                    await nemesis.strike()
                    await trio.sleep(nemesis.rng.uniform(0.5, 1.5))
                cluster.heal()
                for name, member in cluster.members.items():
                    if member.process is None:
                        await cluster.start_member(name)
                healed = time.monotonic()
                await cluster.wait_for_leader(timeout_s=30)
                await trio.sleep(3.0)
                if history.rate(healed, time.monotonic()) < MIN_OPS_PER_S:
                    outcome.problems.append("too little traffic after the heal")
                stop.set()
            await _stop_lock_users(nemesis)
            async with Client(
                cluster.endpoints, timeout_s=10, client_id="final", tls=cluster.client_tls
            ) as final:
                for key in KEYS:
                    call = time.monotonic_ns()
                    got = await final.get(key)
                    history.record(
                        {"client": "final", "op": "get", "key": key, "call": call,
                         "output": got.value if got.found else None,
                         "return": time.monotonic_ns()}
                    )  # fmt: skip
            await converge(cluster, outcome)
            for name, member in cluster.members.items():
                if member.process is not None and member.process.returncode is not None:
                    outcome.problems.append(f"{name} exited on its own")
            nursery.cancel_scope.cancel()
    outcome.ops = history.ops
    checked = subprocess.run(
        [sys.executable, "-m", "tests.lincheck", str(history_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = checked.stdout.splitlines()
    outcome.linearizable = lines[0] if lines else f"checker failed: {checked.stderr[-200:]}"
    for line in lines:
        if line.startswith("staleness: ") and line.endswith("within their bound"):
            outcome.stale_reads = int(line.split()[1])
    if outcome.linearizable != "linearizable":
        outcome.problems.append("history: " + " | ".join(lines[:6]))
    with history_path.open() as recorded:
        ops = [json.loads(line) for line in recorded]
    outcome.problems += [f"revisions: {p}" for p in check_revisions(ops)[:10]]
    with (out / "watch.jsonl").open("w") as watch_file:
        for event in watched:
            watch_file.write(json.dumps(dataclasses.asdict(event)) + "\n")
    outcome.problems += [f"watch: {p}" for p in check_watch(watched, ops)[:10]]
    if locks:
        _check_lock_histories(out, outcome)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "seed": plan.seed,
                "nodes": plan.nodes,
                "clients": plan.clients,
                "kinds": plan.kinds,
                "extras": plan.extras,
                "large_values": plan.large_values,
                "stale_bound_s": plan.stale_bound_s,
                "stale_reads": outcome.stale_reads,
                "stale_refused": outcome.stale_refused,
                "ops": outcome.ops,
                "faults": outcome.faults,
                "linearizable": outcome.linearizable,
                "problems": outcome.problems,
                "events": outcome.events,
            },
            indent=1,
        )
    )
    return outcome
