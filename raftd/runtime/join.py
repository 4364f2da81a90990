"""A member joining an existing cluster learns its id from the first message it is sent.

``raftctl member add`` has the leader assign the new member an id (never one used before)
and put it in a configuration entry; from then on the leader sends it messages addressed
to that id. A member started with ``--join`` and an empty data directory therefore only
listens on its peer port until a member named in ``--cluster``, of the same cluster, sends
it a Raft message: the message's destination is its id, its source the sender's. Only then
does it write its identity and start as usual, with no configuration of its own: it never
campaigns until the log or a snapshot tells it who the members are, so it can never form a
cluster of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import trio

from raftd.config import NodeConfig
from raftd.core import NodeId
from raftd.runtime.listen import open_listeners
from raftd.runtime.tls import Credentials, Refused, accept
from wire.api import PEER_REGISTRY, Hello
from wire.frame import WireError
from wire.stream import FramedStream
from wire.tls import certificate_names

log = structlog.get_logger("raftd.join")

HELLO_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Invitation:
    """Who this member is in the cluster, and who told it."""

    member_id: NodeId
    sender: str
    sender_id: NodeId


async def wait_for_invitation(
    config: NodeConfig, credentials: Credentials | None = None
) -> Invitation:
    """Listen on the peer port until a member of ``--cluster`` sends a Raft message (with
    peer TLS, one whose certificate names it)."""
    found: list[Invitation] = []
    listeners = await open_listeners(config.peer_addr, "peers")
    log.info(
        "waiting to be added: run raftctl member add on the cluster if not done yet",
        peers=str(config.peer_addr),
    )
    async with trio.open_nursery() as nursery:

        async def serve(tcp: trio.SocketStream) -> None:
            context = None if credentials is None else credentials.current.peer_server
            try:
                link, certificate = await accept(tcp, context, timeout_s=HELLO_TIMEOUT_S)
                names = None if context is None else certificate_names(certificate)
                stream = FramedStream(link, PEER_REGISTRY, frame_timeout_s=config.frame_timeout_s)
                invitation = await _read_invitation(config, stream, names)
            except Refused as exc:
                log.warning("refused a peer connection", reason=str(exc))
                invitation = None
            except (WireError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                invitation = None
            finally:
                with trio.CancelScope(shield=True):
                    await tcp.aclose()
            if invitation is not None and not found:
                found.append(invitation)
                nursery.cancel_scope.cancel()

        nursery.start_soon(trio.serve_listeners, serve, listeners)
    for listener in listeners:
        await listener.aclose()
    (invitation,) = found
    return invitation


async def _read_invitation(
    config: NodeConfig, stream: FramedStream, names: frozenset[str] | None
) -> Invitation | None:
    with trio.move_on_after(HELLO_TIMEOUT_S):
        first = await stream.receive()
        if first is None or not isinstance(first[1], Hello):
            return None
        hello = first[1]
        if hello.cluster_id != config.cluster_id or hello.node_name not in config.members:
            log.warning(
                "ignored a peer that is not of this cluster",
                name=hello.node_name,
                cluster=hello.cluster_id,
            )
            return None
        if hello.node_name == config.name:
            return None
        if names is not None and hello.node_name not in names:
            log.warning(
                "ignored a peer whose certificate does not name it",
                name=hello.node_name,
                certificate_names=sorted(names),
            )
            return None
        second = await stream.receive()
        if second is None:
            return None
        msg = second[1]
        dst, src = getattr(msg, "dst", None), getattr(msg, "src", None)
        if not isinstance(dst, int) or not isinstance(src, int) or dst < 1 or src == dst:
            return None
        log.info("added to the cluster", id=dst, by=hello.node_name)
        return Invitation(dst, hello.node_name, src)
    return None
