"""One codec for every durable adapter: domain values to JSON-able dicts and back.

Built on a :class:`cattrs.Converter` with hooks that make every round-trip exact:

* aware datetimes become ISO 8601 strings with their UTC offset and six fractional digits
  (``"2026-03-06T16:30:00.000250+08:00"``); they come back as the same instant with the same
  offset (a named zone such as ``Asia/Shanghai`` comes back as its fixed offset, which compares
  equal). Naive datetimes are refused with :class:`~supportflow.errors.ValidationError`.
* timedeltas become whole microseconds (an ``int``), so nothing is lost to float rounding.
* enums become their values; frozensets become sorted lists; tuples become lists; mappings
  become plain dicts.

Columns that SQL compares or sorts hold instants as integer microseconds since the Unix epoch
in UTC (:func:`instant_to_micros`, :func:`micros_to_instant`), which order chronologically.
"""

from __future__ import annotations

import enum
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn, TypeVar, get_origin

import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from supportflow.clock import ensure_aware
from supportflow.errors import ValidationError
from supportflow.events import Event
from supportflow.model import Message, Notification, SlaState, Ticket, Timer
from supportflow.storage._port import OutboxEntry, Record

__all__ = [
    "NOT_UNICODE",
    "TicketCache",
    "check_unicode",
    "converter",
    "diagnostic_text",
    "dump_json",
    "event_from_doc",
    "event_to_doc",
    "from_doc",
    "instant_to_micros",
    "load_json",
    "micros_to_instant",
    "not_unicode",
    "notification_from_doc",
    "notification_to_doc",
    "outbox_entry_from_doc",
    "outbox_entry_to_doc",
    "record_from_doc",
    "record_to_doc",
    "refuse_text_at",
    "refuse_texts",
    "text_at",
    "ticket_from_doc",
    "ticket_json",
    "ticket_to_doc",
    "timer_from_doc",
    "timer_to_doc",
    "to_doc",
    "unfindable",
]

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


# -- instants as integers (for SQL columns) -----------------------------------------------------
def instant_to_micros(value: datetime, field: str = "datetime") -> int:
    """Microseconds since 1970-01-01T00:00Z; raise ``ValidationError`` for a naive datetime."""
    aware = ensure_aware(value, field)
    # Subtracting aware datetimes is exact integer arithmetic on (days, seconds, microseconds).
    return (aware - _EPOCH) // _MICROSECOND


def micros_to_instant(value: int) -> datetime:
    """The UTC datetime ``value`` microseconds after the epoch (inverse of the above)."""
    return _EPOCH + timedelta(microseconds=value)


# -- hooks --------------------------------------------------------------------------------------
def _unstructure_datetime(value: datetime) -> str:
    aware = ensure_aware(value, "datetime")
    # The stdlib method (not a subclass's override, e.g. pendulum's) with fixed precision.
    return datetime.isoformat(aware, "T", "microseconds")


def _structure_datetime(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        return ensure_aware(value, "datetime")
    if not isinstance(value, str):
        raise ValidationError("datetime", value, "an ISO 8601 string with a UTC offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("datetime", value, "an ISO 8601 string with a UTC offset") from None
    return ensure_aware(parsed, "datetime")


def _unstructure_timedelta(value: timedelta) -> int:
    return value // _MICROSECOND


def _structure_timedelta(value: Any, _: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("timedelta", value, "a whole number of microseconds")
    return timedelta(microseconds=value)


def _is_frozenset(type_: Any) -> bool:
    return type_ is frozenset or get_origin(type_) is frozenset


def _unstructure_frozenset(value: frozenset[Any]) -> list[Any]:
    items = [converter.unstructure(item) for item in value]
    try:
        return sorted(items)
    except TypeError:  # mixed types: any stable order will do
        return sorted(items, key=repr)


def _is_mapping(type_: Any) -> bool:
    origin = get_origin(type_) or type_
    return isinstance(origin, type) and issubclass(origin, Mapping) and origin is not dict


def _unstructure_mapping(value: Mapping[Any, Any]) -> dict[Any, Any]:
    return {key: converter.unstructure(item) for key, item in value.items()}


def _structure_mapping(value: Any, _: Any) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("mapping", value, "a JSON object")
    return dict(value)


def _unstructure_enum(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class _ByObject:
    """Encodings of frozen values by object: a ticket is re-encoded at every save, and its SLA
    state and all but its newest messages are the very objects encoded the time before (a
    command changes few of them).
    """

    def __init__(
        self, encode: Any, *, copy: bool, size: int = 10_000, longest: int = 20_000
    ) -> None:
        self._encode = encode
        self._copy = copy  # documents are copied out: the caller owns what it gets
        self._size = size
        self._longest = longest  # a longer message body is not kept: memory stays bounded
        # id -> (value, encoding); holding the value keeps its id from being reused.
        self._known: dict[int, tuple[object, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, value: object) -> Any:
        hit = self._known.get(id(value))
        if hit is not None and hit[0] is value:
            return dict(hit[1]) if self._copy else hit[1]
        encoded = self._encode(value)
        body: Any = getattr(value, "body", "")
        if not isinstance(body, str) or len(body) > self._longest:
            return encoded
        with self._lock:
            known = self._known
            known[id(value)] = (value, dict(encoded) if self._copy else encoded)
            if len(known) > self._size:
                del known[next(iter(known))]
        return encoded


def _make_converter() -> cattrs.Converter:
    # Documents were validated when they were written: skip cattrs' detailed error trees,
    # which double the cost of reading a ticket.
    made = cattrs.Converter(unstruct_collection_overrides={tuple: list}, detailed_validation=False)
    # ``str`` enums dispatch on ``str`` before ``Enum`` (MRO order), so hook both.
    made.register_unstructure_hook(enum.Enum, _unstructure_enum)
    made.register_unstructure_hook(str, _unstructure_enum)
    made.register_unstructure_hook(datetime, _unstructure_datetime)
    made.register_structure_hook(datetime, _structure_datetime)
    made.register_unstructure_hook(timedelta, _unstructure_timedelta)
    made.register_structure_hook(timedelta, _structure_timedelta)
    made.register_unstructure_hook_func(_is_frozenset, _unstructure_frozenset)
    made.register_unstructure_hook_func(_is_mapping, _unstructure_mapping)
    # Mapping[str, Any] fields hold plain JSON values: keep them as they are, in a dict.
    made.register_structure_hook_func(_is_mapping, _structure_mapping)
    # Only values frozen all the way down (a customer's contacts are a dict: left out).
    for kind in (Message, SlaState):
        made.register_unstructure_hook(
            kind, _ByObject(make_dict_unstructure_fn(kind, made), copy=True)
        )
    return made


converter: cattrs.Converter = _make_converter()
"""The converter every adapter shares."""


# -- generic ------------------------------------------------------------------------------------
def to_doc(value: Any, as_type: type[Any] | None = None) -> dict[str, Any]:
    """``value`` (an attrs instance) as a dict of JSON values."""
    doc = converter.unstructure(value, unstructure_as=as_type or type(value))
    if not isinstance(doc, dict):
        raise ValidationError("value", value, "an attrs instance")
    return doc


def from_doc(doc: Any, as_type: type[T]) -> T:
    """The ``as_type`` instance described by ``doc``; ``ValidationError`` if it does not fit."""
    try:
        return converter.structure(doc, as_type)
    except ValidationError:
        raise
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise ValidationError(as_type.__name__, doc, f"a stored {as_type.__name__}") from exc


def dump_json(doc: Any, field: str = "data") -> str:
    """Compact JSON text; non-ASCII stays readable. NaN, infinities and text that is not valid
    Unicode are refused with a ``ValidationError`` (naming ``field``, or the path under it).
    Floats of magnitude 1e16 and more are written without an exponent (``1e16`` as
    ``10000000000000000.0``): PostgreSQL's ``jsonb`` would read ``1e+16`` back as an int."""
    text = _dumps(doc, field)
    if not text.isascii() and _SURROGATE.search(text) is not None:
        _refuse_surrogates(doc, field)
    return text


def _dumps(doc: Any, field: str = "data") -> str:
    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, doc, f"plain JSON values ({exc})") from None
    if "e+" in text:
        return _STRING_OR_BIG_FLOAT.sub(_without_exponent, text)
    return text


# json.dumps writes floats from 1e16 up as "1e+16". PostgreSQL's jsonb reads such a number as
# a numeric of scale 0, which comes back without a fraction, so as an int. Every such float is
# whole: written as its integer and ".0", it keeps a fraction and reads back as the same float
# everywhere. Strings are matched too, so that text inside them is passed over untouched.
_STRING_OR_BIG_FLOAT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?e\+\d+')


def _without_exponent(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"':
        return token
    return f"{int(float(token))}.0"


# A lone surrogate is a str but not Unicode text: no database encodes it. Decoding bytes with
# errors="surrogateescape" (as the email package does with undecodable headers) leaves them.
_SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UNICODE = "valid Unicode text (no lone surrogates, as errors='surrogateescape' leaves)"


def not_unicode(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def refuse_texts(texts: Mapping[str, object], bad: Callable[[str], bool], expected: str) -> None:
    """Raise ``ValidationError`` for the first of ``texts`` (field name: value) that is text
    ``bad`` holds for (the columns beside the JSON documents: ids, keys, statuses)."""
    for field, text in texts.items():
        if isinstance(text, str) and bad(text):
            raise ValidationError(field, text, expected)


def refuse_text_at(doc: Any, field: str, bad: Callable[[str], bool], expected: str) -> NoReturn:
    """Raise ``ValidationError`` naming the path under ``field`` to the text in ``doc`` that
    ``bad`` holds for (the caller found there is one)."""
    where, value = text_at(doc, field, bad)
    raise ValidationError(where or field, value, expected)


def check_unicode(texts: Mapping[str, object]) -> None:
    """:func:`refuse_texts` for text that is not valid Unicode."""
    refuse_texts(texts, not_unicode, NOT_UNICODE)


def unfindable(*keys: object) -> bool:
    """Whether a lookup by ``keys`` must find nothing: one is text that no stored id or key
    can hold, which a database would refuse as a parameter (an id read from a URL)."""
    return any(isinstance(key, str) and not_unicode(key) for key in keys)


def diagnostic_text(error: object) -> str:
    """A delivery error as text any database stores. It may quote a server's reply, which may
    hold anything, and refusing the report would leave the row to be sent again: lone
    surrogates are written as ``\\udcxx``."""
    text = str(error)
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse_surrogates(doc: Any, field: str) -> NoReturn:
    refuse_text_at(doc, field, not_unicode, NOT_UNICODE)


def text_at(value: Any, path: str, bad: Callable[[str], bool]) -> tuple[str, Any]:
    r"""The path under ``path`` to the first string (or mapping key) in the JSON-like ``value``
    for which ``bad`` holds, and that string; ``("", None)`` when there is none.

    >>> text_at({"tags": ["ok", "b\x00d"]}, "ticket", lambda text: "\x00" in text)
    ('ticket.tags[1]', 'b\x00d')
    """
    if isinstance(value, str):
        return (path, value) if bad(value) else ("", None)
    items: Any = ()
    if isinstance(value, Mapping):
        for key in value:
            if isinstance(key, str) and bad(key):
                return f"{path}[{key!r}]", key
        items = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    for where, item in items:
        found = text_at(item, where, bad)
        if found[0]:
            return found
    return "", None


def load_json(text: str | bytes) -> Any:
    """Parse JSON text written by :func:`dump_json`."""
    return json.loads(text)


# -- per type -----------------------------------------------------------------------------------
def ticket_to_doc(ticket: Ticket) -> dict[str, Any]:
    return to_doc(ticket, Ticket)


def ticket_columns(ticket: Ticket) -> tuple[Any, ...]:
    """The ticket's indexed columns, as both SQL adapters lay them out: id, number, version,
    status, assignee, group, customer id, channel, priority and ``created_at`` (which each
    adapter turns into its own instant type)."""
    if not isinstance(ticket, Ticket):
        raise ValidationError("ticket", ticket, "a Ticket")
    return (
        ticket.id,
        ticket.number,
        ticket.version,
        ticket.status,
        ticket.assignee,
        ticket.group,
        ticket.customer.id,
        ticket.channel.value,
        ticket.priority.value,
        ticket.created_at,
    )


# JSON text of the parts of a ticket that most saves leave as they were, by object.
_sla_json = _ByObject(lambda value: _dumps(to_doc(value, SlaState)), copy=False)
_message_json = _ByObject(lambda value: _dumps(to_doc(value, Message)), copy=False)
_ticket_head = make_dict_unstructure_fn(
    Ticket,
    converter,
    sla=override(omit=True),
    messages=override(omit=True),
)


def ticket_json(ticket: Ticket) -> str:
    """The ticket's document as JSON text (what the SQL adapters store).

    The same document as ``dump_json(ticket_to_doc(ticket))``, with the SLA state and the
    messages last: their texts are kept from the ticket's previous save, so a command that adds
    one message encodes that one (encoding a whole ticket costs more than the database write).
    """
    if not isinstance(ticket, Ticket):
        raise ValidationError("ticket", ticket, "a Ticket")
    head = _dumps(_ticket_head(ticket), "ticket")
    sla = _sla_json(ticket.sla) if ticket.sla is not None else "null"
    messages = ",".join([_message_json(message) for message in ticket.messages])
    text = f'{head[:-1]},"sla":{sla},"messages":[{messages}]}}'
    if not text.isascii() and _SURROGATE.search(text) is not None:
        _refuse_surrogates(ticket_to_doc(ticket), "ticket")
    return text


def ticket_from_doc(doc: Any) -> Ticket:
    return from_doc(doc, Ticket)


def event_to_doc(event: Event) -> dict[str, Any]:
    return to_doc(event, Event)


def event_from_doc(doc: Any) -> Event:
    return from_doc(doc, Event)


def timer_to_doc(timer: Timer) -> dict[str, Any]:
    return to_doc(timer, Timer)


def timer_from_doc(doc: Any) -> Timer:
    return from_doc(doc, Timer)


def notification_to_doc(notification: Notification) -> dict[str, Any]:
    return to_doc(notification, Notification)


def notification_from_doc(doc: Any) -> Notification:
    return from_doc(doc, Notification)


def outbox_entry_to_doc(entry: OutboxEntry) -> dict[str, Any]:
    return to_doc(entry, OutboxEntry)


def outbox_entry_from_doc(doc: Any) -> OutboxEntry:
    return from_doc(doc, OutboxEntry)


def record_to_doc(record: Record) -> dict[str, Any]:
    return to_doc(record, Record)


def record_from_doc(doc: Any) -> Record:
    return from_doc(doc, Record)


class TicketCache:
    """Decoded tickets by id, each with the exact stored JSON text it was decoded from (or
    encoded to): decoding is the costliest step of reading a ticket.

    A hit needs the stored text to be identical, so an entry left by a rolled-back unit of
    work or by another process never passes for the stored ticket. Bounded in entries and in
    characters of JSON held; thread-safe.
    """

    def __init__(self, entries: int = 2048, chars: int = 32_000_000) -> None:
        self._entries = entries
        self._chars = chars
        self._held = 0
        self._docs: dict[str, tuple[str, Ticket]] = {}
        self._lock = threading.Lock()

    def ticket(self, ticket_id: str, text: str) -> Ticket:
        """The ticket stored as ``text``, decoded only if it is not the remembered text."""
        cached = self._docs.get(ticket_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        ticket = ticket_from_doc(load_json(text))
        self.remember(ticket_id, text, ticket)
        return ticket

    def remember(self, ticket_id: str, text: str, ticket: Ticket) -> None:
        """Note that ``text`` decodes to ``ticket``."""
        with self._lock:
            docs = self._docs
            old = docs.pop(ticket_id, None)  # re-inserted last: the oldest go first
            if old is not None:
                self._held -= len(old[0])
            if len(text) > self._chars // 8:
                return  # huge tickets would crowd out all others
            docs[ticket_id] = (text, ticket)
            self._held += len(text)
            while len(docs) > self._entries or self._held > self._chars:
                self._held -= len(docs.pop(next(iter(docs)))[0])

    def clear(self) -> None:
        with self._lock:
            self._docs = {}
            self._held = 0


# -- input checks shared by the adapters --------------------------------------------------------
def check_limit(limit: Any, field: str = "limit") -> int:
    """``limit`` as a non-negative int, else ``ValidationError``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError(field, limit, "a whole number >= 0")
    return limit


def check_lease(lease: Any) -> timedelta:
    """``lease`` as a positive timedelta, else ``ValidationError``."""
    if not isinstance(lease, timedelta) or lease <= timedelta(0):
        raise ValidationError("lease", lease, "a positive timedelta")
    return lease


def check_claim(now: Any, limit: Any, owner: Any, lease: Any) -> None:
    """The arguments of a claim (of timers or of notifications), else ``ValidationError``
    naming the first one that is wrong."""
    ensure_aware(now, "now")
    check_limit(limit)
    check_lease(lease)
    check_text(owner, "owner")


def check_keys(keys: Any) -> list[str]:
    """``keys`` (a sequence of idempotency keys, not one string) as a list, else
    ``ValidationError``."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise ValidationError("keys", keys, "a sequence of idempotency keys (not one string)")
    for key in keys:
        if not isinstance(key, str):
            raise ValidationError("keys", keys, "a sequence of idempotency keys (strings)")
    return list(keys)


def check_text(value: Any, field: str) -> str:
    """``value`` as a non-empty string, else ``ValidationError``."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "a non-empty string")
    check_unicode({field: value})
    return value


def check_strings(texts: Mapping[str, object]) -> None:
    """Each value of ``texts`` (by field name) is a string, else ``ValidationError``."""
    for field, value in texts.items():
        if not isinstance(value, str):
            raise ValidationError(field, value, "a string")


def check_statuses(statuses: Any) -> list[str] | None:
    """``TicketQuery.status`` as a list of names (``None`` stays ``None``)."""
    if statuses is None:
        return None
    # A bare string is a sequence of characters: almost surely a mistake.
    if isinstance(statuses, str) or not all(isinstance(s, str) for s in statuses):
        raise ValidationError("status", statuses, "a sequence of status names, e.g. ['open']")
    return list(statuses)


def check_timers(ticket_id: str, timers: Any) -> dict[str, Timer]:
    """The timers by key; ``ValidationError`` for another ticket's timer or a repeated key."""
    by_key: dict[str, Timer] = {}
    for timer in timers:
        if not isinstance(timer, Timer):
            raise ValidationError("timers", timer, "Timer instances")
        if timer.ticket_id != ticket_id:
            raise ValidationError("timer.ticket_id", timer.ticket_id, f"{ticket_id!r}")
        if timer.key in by_key:
            raise ValidationError("timer.key", timer.key, "one timer per key")
        check_unicode({"timer.key": timer.key, "timer.kind": timer.kind})
        by_key[timer.key] = timer
    check_unicode({"ticket_id": ticket_id})
    return by_key


def check_event(event: Any) -> Event:
    """``event`` if it is an :class:`Event` with a positive sequence, else ``ValidationError``."""
    if not isinstance(event, Event):
        raise ValidationError("events", event, "Event instances")
    if isinstance(event.sequence, bool) or not isinstance(event.sequence, int):
        raise ValidationError("event.sequence", event.sequence, "a whole number >= 1")
    if event.sequence < 1:
        raise ValidationError("event.sequence", event.sequence, "a whole number >= 1")
    if not f"{event.ticket_id}{event.type}{event.actor}".isascii():
        check_unicode(
            {
                "event.ticket_id": event.ticket_id,
                "event.type": event.type,
                "event.actor": event.actor,
            }
        )
    return event


def check_new_version(new_version: Any, expected_version: Any, field: str) -> None:
    """An update's new version must be an int greater than the expected one."""
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise ValidationError("expected_version", expected_version, "a whole number")
    if isinstance(new_version, bool) or not isinstance(new_version, int):
        raise ValidationError(field, new_version, "a whole number")
    if new_version <= expected_version:
        raise ValidationError(field, new_version, f"a version greater than {expected_version}")
