"""CBOR payloads: a header and a body, both turned into typed values or a WireError.

A frame's payload is the CBOR array ``[header, body]``. The header is a small map
(``v`` version, ``k`` kind, ``id`` request id, ``tp``/``ts`` W3C trace context); the body is
the positional field list of one registered dataclass, named by ``k``. Positional lists keep
a Raft message to a few bytes of overhead, and decoding checks every field's type, so
whatever a hostile peer sends becomes a ``CodecError`` and never a half-built message.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cbor2

from wire.frame import WireError
from wire.tracecontext import (
    TraceParent,
    format_traceparent,
    parse_traceparent,
    parse_tracestate,
)

PROTOCOL_VERSION = 1


class CodecError(WireError):
    """The payload is not a well-formed message of a known kind."""


class UnsupportedVersion(CodecError):
    def __init__(self, version: object) -> None:
        super().__init__(f"protocol version {_describe(version)} is not supported (we speak 1)")
        self.version = version


@dataclass(frozen=True, slots=True)
class Header:
    """What every frame says about itself. Trace context travels here and only here."""

    kind: str
    request_id: int = 0
    traceparent: TraceParent | None = None
    tracestate: str | None = None
    version: int = PROTOCOL_VERSION
    # Peer frames only, for bounded-staleness reads: how long the message waited between
    # being built and being written (so a receiver can date it by when it was built, not
    # by when a queue or an injected delay let it go), and on a leader's message how stale
    # the leader's own state was when it built it. Microseconds.
    age_us: int | None = None
    lag_us: int | None = None
    # The sender's wall clock (µs since the epoch) as it wrote the frame, so the receiver can
    # count the time on the wire too (with clocks in sync; on one machine, exactly).
    sent_us: int | None = None
    # Peer frames only: how many more traces the sender could record in its trace window
    # now, so members starting a trace others join can keep it whole (observability.budget).
    trace_room: int | None = None
    # Set on decode when the sender put a trace context here that we had to drop (not a
    # valid traceparent): the request is still served, the receiver counts and logs it.
    dropped_traceparent: bool = dataclasses.field(default=False, compare=False)


Checker = Callable[[Any], Any]


def _describe(value: object) -> str:
    """A short description of a hostile value that cannot itself blow up or balloon: no
    repr of a huge integer (Python refuses past 4300 digits) or of megabytes of text."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"int of {value.bit_length()} bits"
    if isinstance(value, str | bytes):
        shown = value[:40]
        return f"{type(value).__name__} {shown!r}{'...' if len(value) > 40 else ''}"
    if isinstance(value, list | dict):
        return f"{type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r:.40}"


def _fail(what: str, value: object) -> typing.NoReturn:
    raise CodecError(f"{what}: unexpected {_describe(value)}")


def _check_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail("expected an integer", value)
    return value


def _check_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail("expected a number", value)
    try:
        return float(value)
    except OverflowError:
        _fail("number out of range", value)


def _check_exact(kind: type) -> Checker:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            _fail(f"expected {kind.__name__}", value)
        return value

    return check


def _check_optional(inner: Checker) -> Checker:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _check_enum(kind: type[enum.IntEnum]) -> Checker:
    def check(value: Any) -> Any:
        try:
            return kind(_check_int(value))
        except ValueError:
            _fail(f"expected a {kind.__name__}", value)

    return check


def _check_tuple_of(inner: Checker) -> Checker:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            _fail("expected a list", value)
        return tuple(inner(item) for item in value)

    return check


class Registry:
    """Dataclasses that may travel as a body, by kind name, with their field checkers."""

    def __init__(self) -> None:
        self._by_kind: dict[str, tuple[type, list[Checker]]] = {}
        self._kind_of: dict[type, str] = {}
        # Encoders compiled once per class from its type hints: encoding is on the path of
        # every message, and asking ``dataclasses`` about each value was a tenth of a busy
        # leader's time.
        self._encoders: dict[type, Callable[[Any], list[Any]]] = {}
        # Decoders compiled the same way (``_builder``): checking each field through a
        # chain of closures and a generator cost more than the CBOR decoding itself.
        self._builders: dict[str, Callable[[Any], Any]] = {}

    def register(self, *classes: type) -> None:
        for cls in classes:
            checkers = self._field_checkers(cls)
            self._by_kind[cls.__name__] = (cls, checkers)
            self._kind_of[cls] = cls.__name__
            self._builders[cls.__name__] = self._builder(cls, checkers)
            self._encoder(cls)

    def _field_checkers(self, cls: type) -> list[Checker]:
        hints = typing.get_type_hints(cls)
        return [self._checker(hints[f.name]) for f in dataclasses.fields(cls)]

    def kind_of(self, value: object) -> str:
        try:
            return self._kind_of[type(value)]
        except KeyError:
            raise TypeError(f"{type(value).__name__} is not a registered message") from None

    def kinds(self) -> Iterable[str]:
        return self._by_kind.keys()

    def to_body(self, value: Any) -> list[Any]:
        encode = self._encoders.get(type(value))
        if encode is None:
            encode = self._encoder(type(value))
        return encode(value)

    def _encoder(self, cls: type) -> Callable[[Any], list[Any]]:
        """The positional body of a ``cls`` value, as CBOR takes it: a function compiled
        from the type hints, one list display of plain attribute reads."""
        known = self._encoders.get(cls)
        if known is not None:
            return known
        hints = typing.get_type_hints(cls)
        scope: dict[str, Any] = {}
        items = [
            self._encoded(f"value.{f.name}", hints[f.name], scope, f"_{i}")
            for i, f in enumerate(dataclasses.fields(cls))
        ]
        source = f"def encode(value):\n    return [{', '.join(items)}]"
        exec(compile(source, f"<{cls.__name__} encoder>", "exec"), scope)
        encode: Callable[[Any], list[Any]] = scope["encode"]
        self._encoders[cls] = encode
        return encode

    def _encoded(self, expr: str, hint: Any, scope: dict[str, Any], tag: str) -> str:
        """An expression for ``expr`` (of type ``hint``) as plain CBOR data."""
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            (inner_hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
            name = f"o{tag}"  # its own name: a walrus may not rebind a comprehension's
            inner = self._encoded(name, inner_hint, scope, tag)
            if inner == name:
                return expr
            return f"(None if ({name} := {expr}) is None else {inner})"
        if origin is tuple:
            name = f"i{tag}"
            item = self._encoded(name, typing.get_args(hint)[0], scope, tag)
            return f"list({expr})" if item == name else f"[{item} for {name} in {expr}]"
        if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
            return f"int({expr})"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            scope[f"enc{tag}"] = self._encoder(hint)
            return f"enc{tag}({expr})"
        return expr

    def from_body(self, kind: str, body: Any) -> Any:
        build = self._builders.get(kind)
        if build is None:
            raise CodecError(f"unknown message kind {_describe(kind)}")
        return build(body)

    def _builder(self, cls: type, checkers: list[Checker]) -> Callable[[Any], Any]:
        """A function that builds a ``cls`` from its body, compiled from its type hints.

        The compiled checks are a fast subset of the checkers': anything they do not
        recognise at once (a wrong type, a float field, a hostile value) goes to ``_build``,
        which either accepts it the same way or raises the precise error. So both paths
        accept the same bodies and build the same values, and only the common case is fast.
        """
        kind = cls.__name__
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        scope: dict[str, Any] = {
            "cls": cls,
            "slow": _build,
            "kind": kind,
            "checkers": checkers,
            "CodecError": CodecError,
        }
        lines: list[str] = []
        for i, name in enumerate(names):
            check = self._fast_check(f"f{i}", hints[name], scope, f"_{i}")
            if check is None:
                return lambda body: _build(kind, cls, checkers, body)
            lines += check
        fields = ", ".join(f"f{i}" for i in range(len(names)))
        unpack = [f"{fields}, = body"] if names else []
        source = "\n".join(
            [
                "def build(body):",
                f"    if type(body) is not list or len(body) != {len(names)}:",
                "        return slow(kind, cls, checkers, body)",
                *(f"    {line}" for line in [*unpack, *lines]),
                f"    return cls({fields})",
            ]
        )
        exec(compile(source, f"<{kind} decoder>", "exec"), scope)
        built: Callable[[Any], Any] = scope["build"]
        return built

    def _fast_check(self, var: str, hint: Any, scope: dict[str, Any], tag: str) -> list[str] | None:
        """Source lines that check (and convert) ``var`` of type ``hint``, falling back to
        the slow path on anything unexpected; None: no fast form for this type."""
        fallback = "return slow(kind, cls, checkers, body)"
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            (inner_hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
            inner = self._fast_check(var, inner_hint, scope, tag)
            if inner is None:
                return None
            return [f"if {var} is not None:", *(f"    {line}" for line in inner)]
        if hint in (int, str, bytes, bool, float):
            # A float field's fast form takes floats only: an int (which the checker
            # converts) and anything else go the slow way.
            scope[f"t{tag}"] = hint
            return [f"if type({var}) is not t{tag}:", f"    {fallback}"]
        if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
            scope[f"e{tag}"] = {member.value: member for member in hint}
            return [
                f"{var} = e{tag}.get({var}) if type({var}) is int else None",
                f"if {var} is None:",
                f"    {fallback}",
            ]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested = self._builder(hint, self._field_checkers(hint))
            scope[f"b{tag}"] = nested
            # The slow path says which message the bad nested value was in.
            return ["try:", f"    {var} = b{tag}({var})", "except CodecError:", f"    {fallback}"]
        if origin is tuple:
            item_hint = typing.get_args(hint)[0]
            if isinstance(item_hint, type) and dataclasses.is_dataclass(item_hint):
                scope[f"b{tag}"] = self._builder(item_hint, self._field_checkers(item_hint))
                return [
                    f"if type({var}) is not list:",
                    f"    {fallback}",
                    "try:",
                    f"    {var} = tuple(map(b{tag}, {var}))",
                    "except CodecError:",
                    f"    {fallback}",
                ]
            if item_hint in (int, str, bytes):
                scope[f"t{tag}"] = item_hint
                return [
                    f"if type({var}) is not list or any(type(x) is not t{tag} for x in {var}):",
                    f"    {fallback}",
                    f"{var} = tuple({var})",
                ]
        return None

    def _checker(self, hint: Any) -> Checker:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(options) != 1:
                raise TypeError(f"unsupported union {hint}")
            return _check_optional(self._checker(options[0]))
        if origin is tuple:
            inner, ellipsis = typing.get_args(hint)
            assert ellipsis is Ellipsis, hint
            return _check_tuple_of(self._checker(inner))
        if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
            return _check_enum(hint)
        if hint is int:
            return _check_int
        if hint is float:
            return _check_float
        if hint in (str, bytes, bool):
            return _check_exact(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            # Nested only (an Entry inside AppendEntries): never a kind of its own.
            nested, checkers = hint, self._field_checkers(hint)
            return lambda value: _build(nested.__name__, nested, checkers, value)
        raise TypeError(f"unsupported field type {hint}")


def _build(kind: str, cls: type, checkers: list[Checker], body: Any) -> Any:
    if not isinstance(body, list) or len(body) != len(checkers):
        raise CodecError(f"{kind}: expected {len(checkers)} fields")
    try:
        return cls(*(check(value) for check, value in zip(checkers, body, strict=True)))
    except CodecError as exc:
        raise CodecError(f"{kind}: {exc}") from None


def encode_payload(header: Header, body: list[Any]) -> bytes:
    head: dict[str, Any] = {"v": header.version, "k": header.kind, "id": header.request_id}
    if header.traceparent is not None:
        head["tp"] = format_traceparent(header.traceparent)
    if header.tracestate:
        head["ts"] = header.tracestate
    if header.age_us is not None:
        head["a"] = header.age_us
    if header.lag_us is not None:
        head["l"] = header.lag_us
    if header.sent_us is not None:
        head["w"] = header.sent_us
    if header.trace_room is not None:
        head["r"] = header.trace_room
    return cbor2.dumps([head, body])


def decode_payload(payload: bytes) -> tuple[Header, Any]:
    """Split a payload into its header and raw body; the body is checked by a Registry."""
    source = io.BytesIO(payload)
    try:
        decoded = cbor2.CBORDecoder(source).decode()
    except Exception as exc:  # cbor2 raises many types on hostile bytes
        raise CodecError(f"not CBOR: {type(exc).__name__}") from None
    if source.tell() != len(payload):
        raise CodecError(f"{len(payload) - source.tell()} stray bytes after the message")
    if not isinstance(decoded, list) or len(decoded) != 2 or not isinstance(decoded[0], dict):
        raise CodecError("payload is not [header, body]")
    head, body = decoded
    version = head.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise UnsupportedVersion(version)
    kind, request_id = head.get("k"), head.get("id", 0)
    if not isinstance(kind, str):
        _fail("header kind", kind)
    _check_int(request_id)
    traceparent = None
    raw_parent = head.get("tp")
    if isinstance(raw_parent, str):
        traceparent = parse_traceparent(raw_parent)  # invalid context: dropped, per the spec
    dropped = raw_parent is not None and traceparent is None
    raw_state = head.get("ts")
    tracestate = None
    if traceparent is not None and isinstance(raw_state, str):
        # Kept as text for relaying, but only if it is a valid list-member list.
        tracestate = raw_state if parse_tracestate(raw_state) is not None else None
    age_us, lag_us = _optional_micros(head, "a"), _optional_micros(head, "l")
    sent_us = _optional_micros(head, "w")
    trace_room = _optional_micros(head, "r")  # a count, held to the same bounds
    return Header(
        kind,
        request_id,
        traceparent,
        tracestate,
        age_us=age_us,
        lag_us=lag_us,
        sent_us=sent_us,
        trace_room=trace_room,
        dropped_traceparent=dropped,
    ), body


def _optional_micros(head: dict[Any, Any], name: str) -> int | None:
    value = head.get(name)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 1 << 63:
        _fail(f"header field {name!r}", value)
    return value
