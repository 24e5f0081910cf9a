"""The support desk's value objects: tickets, customers, messages, timers and notifications.

All are frozen attrs classes: a command never changes a ticket in place, it produces the next
version with :func:`attrs.evolve`. Enumerations are ``str`` enums so that they store and print
as their plain names (``Priority.HIGH == "high"``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from numbers import Integral
from typing import Any, TypeVar

import attrs

from supportflow.errors import ValidationError

__all__ = [
    "LONGEST_DURATION",
    "Channel",
    "Customer",
    "Link",
    "Message",
    "Notification",
    "Priority",
    "Recipient",
    "RecipientRole",
    "Role",
    "SlaClock",
    "SlaClockState",
    "SlaState",
    "StatusCategory",
    "Ticket",
    "Timer",
    "Verification",
    "VerificationMethod",
    "check_duration",
    "check_text",
    "coerce_enum",
    "duration_validator",
    "plain_json",
    "tier_key",
    "whole_number",
]


class Channel(str, enum.Enum):
    """Where a request came in."""

    PHONE = "phone"
    EMAIL = "email"
    CHAT = "chat"
    WEB = "web"
    SOCIAL = "social"
    VISIT = "visit"
    API = "api"


_PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}


class Priority(str, enum.Enum):
    """How soon a ticket needs attention. Ordered: ``Priority.URGENT > Priority.LOW``."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for urgent."""
        return _PRIORITY_RANK[self.value]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank >= other.rank

    __hash__ = str.__hash__


class StatusCategory(str, enum.Enum):
    """What a status means to the engines, whatever the workflow calls it."""

    NEW = "new"
    ACTIVE = "active"
    WAITING = "waiting"  # the resolution clock pauses
    RESOLVED = "resolved"
    CLOSED = "closed"


class Role(str, enum.Enum):
    """Who wrote a message."""

    AGENT = "agent"
    CUSTOMER = "customer"
    SYSTEM = "system"


class VerificationMethod(str, enum.Enum):
    """How an agent confirmed who the customer is."""

    ACCOUNT_LOGIN = "account_login"
    CALL_BACK = "call_back"
    SECURITY_QUESTION = "security_question"
    DOCUMENT = "document"


class RecipientRole(str, enum.Enum):
    """Who a notification is for; each role is delivered by the notifier registered for it."""

    CUSTOMER = "customer"
    AGENT = "agent"
    TEAM_LEAD = "team_lead"
    MANAGER = "manager"
    GROUP = "group"
    ON_CALL = "on_call"
    WEBHOOK = "webhook"


E = TypeVar("E", bound=enum.Enum)


def check_text(
    field: str,
    value: object,
    *,
    empty_ok: bool = False,
    optional: bool = False,
    expected: str | None = None,
) -> None:
    """``ValidationError`` naming ``field`` unless ``value`` is a string (not blank, unless
    ``empty_ok``), or ``None`` when ``optional``; ``expected`` replaces the message's wording.

    >>> check_text("by", "agent_li")
    """
    if isinstance(value, str) and (empty_ok or value.strip()):
        return
    if optional and value is None:
        return
    if expected is None:
        expected = ("a string" if empty_ok else "a non-empty string") + (
            " or None" if optional else ""
        )
    raise ValidationError(field, value, expected)


def whole_number(field: str, value: object, least: int) -> int:
    """``value`` as an ``int`` if it is a whole number (an ``IntEnum`` or a NumPy integer too,
    not a bool) of at least ``least``, else ``ValidationError``.

    >>> whole_number("limit", 10, 0)
    10
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise ValidationError(field, value, f"a whole number, at least {least}")
    return int(value)


LONGEST_DURATION = timedelta(days=365_250)  # 1,000 years of 365.25 days


def check_duration(
    field: str, value: object, *, least: timedelta | None = None, optional: bool = False
) -> None:
    """``ValidationError`` naming ``field`` unless ``value`` is a ``timedelta`` (a pendulum
    ``Duration`` too) above zero, or at least ``least`` when given, and at most 1,000 years;
    or ``None`` when ``optional``.

    Longer settings are typos, and their deadlines would fall past the year 9999, where no
    date exists: refused when the setting is made, not on the first ticket.

    >>> check_duration("window", timedelta(minutes=10))
    """
    if optional and value is None:
        return
    shortest = timedelta(0) if least is None else least
    if (
        isinstance(value, timedelta)
        and shortest <= value <= LONGEST_DURATION
        and (least is not None or value > shortest)  # without ``least``: above zero
    ):
        return
    lower = "above zero" if least is None else f"from {least}"
    raise ValidationError(
        field, value, f"a timedelta {lower} to 1,000 years" + (", or None" if optional else "")
    )


def duration_validator(
    *, least: timedelta | None = None, optional: bool = False
) -> Callable[[object, attrs.Attribute[Any], object], None]:
    """:func:`check_duration` as an attrs validator, naming the attribute."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_duration(attribute.name, value, least=least, optional=optional)

    return check


_PLAIN_JSON = "plain JSON: text, finite numbers, true/false, None, lists, string-keyed mappings"


def plain_json(value: object, field: str) -> Any:
    """``value`` as plain JSON data that every store reads back as it was written, or a
    ``ValidationError`` naming the path to the first value that is not (``fields.sizes[2]``).

    Mappings and lists come back as new ``dict`` and ``list`` objects (a tuple becomes a list,
    as JSON has only arrays), so later changes to the caller's containers do not reach the
    ticket; ``str`` and ``int`` subclasses (enums) become plain ``str`` and ``int``, and
    ``-0.0`` becomes ``0.0``.

    >>> plain_json({"sizes": (38, 39), "gift": True}, "fields")
    {'sizes': [38, 39], 'gift': True}
    >>> plain_json({"ratio": float("nan")}, "fields")
    Traceback (most recent call last):
    ...
    supportflow.errors.ValidationError: fields.ratio=nan is invalid: expected a finite number
    """
    try:
        return _plain_json(value, field)
    except RecursionError:  # a container holding itself, or nested thousands deep
        raise ValidationError(field, value, "JSON data without cycles") from None


def _plain_json(value: object, field: str) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):  # JSON has no NaN or infinities
            raise ValidationError(field, value, "a finite number")
        # ``+ 0.0`` turns -0.0 into 0.0: PostgreSQL's jsonb has no negative zero, so every
        # store keeps the one zero it can read back.
        return (value if kind is float else float(value)) + 0.0
    if isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(field, key, "string keys (JSON objects have no others)")
            key = key if type(key) is str else str.__str__(key)  # a str enum: its text
            copy[key] = _plain_json(item, f"{field}.{key}")
        return copy
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{field}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    raise ValidationError(field, value, _PLAIN_JSON)


def tier_key(tier: str) -> str:
    """A customer tier as tiers are compared everywhere: without surrounding spaces or case.

    >>> tier_key(" VIP ")
    'vip'
    """
    return tier.strip().casefold()


def coerce_enum(enum_type: type[E], value: Any, field: str) -> E:
    """Turn ``value`` (a member or its value) into a member of ``enum_type``.

    >>> coerce_enum(Priority, "high", "priority")
    <Priority.HIGH: 'high'>
    """
    if isinstance(value, enum_type):
        return value
    # The members by value, as ``enum_type(value)`` finds them, without its Python-level call.
    member = enum_type._value2member_map_.get(value) if type(value) is str else None
    if member is not None:
        return member  # type: ignore[return-value]
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in enum_type)
        raise ValidationError(field, value, f"one of {allowed}") from None


def _role(value: Any) -> Role:
    return coerce_enum(Role, value, "role")


def _channel(value: Any) -> Channel:
    return coerce_enum(Channel, value, "channel")


def _priority(value: Any) -> Priority:
    return coerce_enum(Priority, value, "priority")


def _method(value: Any) -> VerificationMethod:
    return coerce_enum(VerificationMethod, value, "method")


def _clock_state(value: Any) -> SlaClockState:
    return coerce_enum(SlaClockState, value, "state")


def _recipient_role(value: Any) -> RecipientRole:
    return coerce_enum(RecipientRole, value, "role")


def _tags(value: Any) -> frozenset[str]:
    # Most tickets have no tag; one shared empty set (each new one is 216 bytes).
    return frozenset(value) if value else _NO_TAGS


_NO_TAGS: frozenset[str] = frozenset()


def _aware(instance: Any, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValidationError(attribute.name, value, "a timezone-aware datetime")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value) if value else _EMPTY


# attrs validators shared by the value and policy classes (private: named for the field).
def _is_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A string, which may be empty."""
    if not isinstance(value, str):
        raise ValidationError(attribute.name, value, "a string")


def _is_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(attribute.name, value, "a non-empty string")


def _is_optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(attribute.name, value, "a string or None")


def _is_optional_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValidationError(attribute.name, value, "a non-empty string or None")


def _is_flag(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValidationError(attribute.name, value, "True or False")


def _text(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        field = f"{type(instance).__name__.lower()}.{attribute.name}"
        raise ValidationError(field, value, "a string")


def _contacts(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """A customer's contacts: a mapping of kind (``email``, ``phone``) to address. (Addresses
    are not checked: stored customers may hold a phone number written as a number.)"""
    if not value:
        return _EMPTY
    try:
        contacts = dict(value)
    except (TypeError, ValueError):
        contacts = None
    if contacts is None or not all(isinstance(kind, str) for kind in contacts):
        raise ValidationError("customer.contacts", value, "a mapping of kinds (strings)")
    return contacts


_EMPTY: Mapping[str, Any] = {}


@attrs.frozen(slots=True)
class Customer:
    """The person or organisation asking for help.

    >>> Customer(id="c-17", name="Wang Fang", tier="vip").is_vip
    True
    """

    id: str = attrs.field(validator=_text)
    name: str = attrs.field(default="", validator=_text)
    contacts: Mapping[str, str] = attrs.field(factory=dict, converter=_contacts)
    tier: str = attrs.field(default="standard", validator=_text)
    verified: bool = False
    language: str = attrs.field(default="en", validator=_text)

    @property
    def is_vip(self) -> bool:
        """Whether the tier is ``vip``, in any case and without surrounding spaces."""
        return tier_key(self.tier) == "vip"


@attrs.frozen(slots=True, weakref_slot=False)
class Message:
    """One message on a ticket: a public reply, a customer message or an internal note.

    ``id`` is unique within its ticket: ``m1``, ``m2``, ... in the order written.
    """

    id: str
    author: str
    role: Role = attrs.field(converter=_role)
    body: str
    at: datetime = attrs.field(validator=_aware)
    public: bool = True


@attrs.frozen(slots=True)
class Verification:
    """Who verified the customer's identity, how, and when."""

    by: str
    method: VerificationMethod = attrs.field(converter=_method)
    at: datetime = attrs.field(validator=_aware)


@attrs.frozen(slots=True, weakref_slot=False)
class Link:
    """A typed link from one ticket to another (``parent``, ``child``, ``follows``, ...)."""

    kind: str
    ticket_id: str


class SlaClockState(str, enum.Enum):
    """Where an SLA clock stands."""

    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"
    STOPPED = "stopped"  # no target for this clock, or it was never started


@attrs.frozen(slots=True, weakref_slot=False)
class SlaClock:
    """One SLA clock of a ticket (first response, next response or resolution).

    ``elapsed`` is business time counted up to ``since`` (the last instant the engine looked);
    while running, the clock is due at ``due_at``. A met-late clock has ``met_at`` and
    ``breached_at`` both set.
    """

    name: str
    target: timedelta | None
    state: SlaClockState = attrs.field(default=SlaClockState.STOPPED, converter=_clock_state)
    elapsed: timedelta = timedelta(0)
    since: datetime | None = None
    due_at: datetime | None = None
    met_at: datetime | None = None
    breached_at: datetime | None = None
    warnings_fired: tuple[int, ...] = ()
    pending_warnings: tuple[tuple[int, datetime], ...] = ()
    cycle: int = 0

    @property
    def running(self) -> bool:
        """True while business time counts (also after a breach, until met)."""
        return self.state in (SlaClockState.RUNNING, SlaClockState.BREACHED)

    @property
    def breached(self) -> bool:
        return self.breached_at is not None


@attrs.frozen(slots=True, weakref_slot=False)
class SlaState:
    """The SLA of a ticket: which policy applies, why, and its clocks by name."""

    policy: str
    reason: str
    clocks: tuple[SlaClock, ...] = ()

    def clock(self, name: str) -> SlaClock | None:
        """The clock called ``name`` (``"resolution"``, ...), or ``None`` if the ticket has no
        such clock."""
        for item in self.clocks:
            if item.name == name:
                return item
        return None


@attrs.frozen(slots=True, weakref_slot=False)
class Ticket:
    """A customer's case, at one version.

    Tickets are values: commands on the :class:`~supportflow.Desk` return the next version.
    ``status`` is a workflow status name (``"open"``, ``"closed"``, ...); its category decides how
    the engines treat it. ``fields`` holds the desk's custom fields; ``state`` holds the
    bookkeeping of the rules engines (escalation level, auto-close, idle chat, ...).
    """

    id: str
    number: int
    subject: str
    description: str
    customer: Customer
    channel: Channel = attrs.field(converter=_channel)
    status: str
    created_at: datetime = attrs.field(validator=_aware)
    updated_at: datetime = attrs.field(validator=_aware)
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=_priority)
    category: str | None = None
    kind: str = "request"
    assignee: str | None = None
    group: str | None = None
    tags: frozenset[str] = attrs.field(default=_NO_TAGS, converter=_tags)
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    messages: tuple[Message, ...] = ()
    links: tuple[Link, ...] = ()
    verification: Verification | None = None
    sla: SlaState | None = None
    sequence: int = 0
    impact: str | None = None
    urgency: str | None = None
    priority_explicit: bool = False
    resolution: str | None = None
    state: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    next_deadline: datetime | None = None
    version: int = 1

    @property
    def public_messages(self) -> tuple[Message, ...]:
        """The messages the customer can see, in order (internal notes left out)."""
        return tuple(message for message in self.messages if message.public)

    def linked(self, kind: str) -> tuple[str, ...]:
        """Ids of the tickets linked with ``kind``."""
        return tuple(link.ticket_id for link in self.links if link.kind == kind)


@attrs.frozen(slots=True, weakref_slot=False)
class Timer:
    """A future deadline of a ticket: a row ``(ticket_id, key, due_at)`` in the store.

    ``key`` names what is due (``"sla:resolution:breach"``, ``"autoclose"``, ...); a ticket has at
    most one timer per key. Timers are recomputed from the ticket whenever it changes.
    """

    ticket_id: str
    key: str
    due_at: datetime = attrs.field(validator=_aware)
    kind: str = ""


@attrs.frozen(slots=True)
class Recipient:
    """Where a notification goes: a role and an address meaningful to that role's notifier."""

    role: RecipientRole = attrs.field(converter=_recipient_role)
    address: str
    name: str = ""


@attrs.frozen(slots=True, weakref_slot=False)
class Notification:
    """A message to deliver, written to the outbox in the same unit of work as its cause.

    ``idempotency_key`` is unique per notification and travels with every delivery attempt so
    that receivers can drop repeats.
    """

    idempotency_key: str
    kind: str
    recipients: tuple[Recipient, ...]
    subject: str
    body: str
    created_at: datetime = attrs.field(validator=_aware)
    ticket_id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)


A = TypeVar("A")


def _draft_class(cls: type[A]) -> type:
    """A plain slotted twin of the frozen slotted ``cls``, with the same slots in the same
    order: an instance filled in through it becomes a ``cls`` by assigning ``__class__``.

    Filling a slot of the twin is a plain attribute store, where the frozen class refuses
    ``__setattr__`` and each way around that (``object.__setattr__``, the slot's ``__set__``)
    is a call. Python allows the class assignment only between equal layouts, which a
    ``__weakref__`` slot breaks: the value classes built this way have none.
    """
    if cls.__bases__ != (object,) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a slotted class with no base but object")
    draft = type(f"_{cls.__name__}Draft", (object,), {"__slots__": cls.__dict__["__slots__"]})
    probe: Any = object.__new__(draft)
    try:
        probe.__class__ = cls  # a layout Python refuses fails here, not on every call
    except TypeError as error:
        raise TypeError(f"{cls.__name__} must be slotted without a __weakref__ slot") from error
    return draft


_REPLACERS_PER_CLASS = 512  # sets of changed fields given a replacer of their own


def _replacer(cls: type[A]) -> Callable[[A, Mapping[str, Any]], A]:
    """Generate a fast ``attrs.evolve`` for a frozen slotted class, without its converters and
    validators (private: the engines only pass values they built themselves, already checked).

    ``attrs.evolve`` inspects the class and runs ``__init__`` on every call; the rules engines
    evolve tickets and SLA clocks several times per command. This fills a draft twin of the
    class (:func:`_draft_class`) and turns it into a ``cls``, with one generated function per
    set of changed fields (in the order given): each field is copied or taken from
    ``changes`` without asking which. The engines change a few dozen sets at most; past
    ``_REPLACERS_PER_CLASS`` the rest share one function that asks.

    >>> replace = _replacer(Link)
    >>> replace(Link("parent", "t-1"), {"ticket_id": "t-2"})
    Link(kind='parent', ticket_id='t-2')
    """
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {
        "cls": cls,
        "draft": _draft_class(cls),
        "new_object": object.__new__,
    }

    def generate(changed: tuple[str, ...] | None) -> Callable[[A, Mapping[str, Any]], A]:
        lines = ["def replace(old, changes):", "    new = new_object(draft)"]
        for name in names:
            if changed is None:
                value = f"changes[{name!r}] if {name!r} in changes else old.{name}"
            else:
                value = f"changes[{name!r}]" if name in changed else f"old.{name}"
            lines.append(f"    new.{name} = {value}")
        lines += ["    new.__class__ = cls", "    return new"]
        # Defined into a dict of its own: threads may generate replacers at the same time.
        defined: dict[str, Any] = {}
        exec("\n".join(lines), namespace, defined)  # generated from the class's own fields
        generated: Callable[[A, Mapping[str, Any]], A] = defined["replace"]
        return generated

    by_changed: dict[tuple[str, ...], Callable[[A, Mapping[str, Any]], A]] = {}
    asking = generate(None)

    def replace(old: A, changes: Mapping[str, Any]) -> A:
        changed = tuple(changes)
        fill = by_changed.get(changed)
        if fill is None:
            if len(by_changed) >= _REPLACERS_PER_CLASS:
                return asking(old, changes)
            fill = by_changed[changed] = generate(changed)
        return fill(old, changes)

    return replace


def _slot_setter(cls: type[A], name: str) -> Callable[[A, Any], None]:
    """The setter of one slot of a frozen slotted class (private: for an instance still being
    built, which nothing else holds yet)."""
    setter: Callable[[A, Any], None] = getattr(cls, name).__set__
    return setter


def _maker(cls: type[A]) -> Callable[..., A]:
    """Generate a constructor taking every field positionally, without converters and
    validators (private, like :func:`_replacer`: for values the engines built themselves)."""
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {
        "cls": cls,
        "draft": _draft_class(cls),
        "new_object": object.__new__,
    }
    lines = [f"def make({', '.join(names)}):", "    new = new_object(draft)"]
    lines += [f"    new.{name} = {name}" for name in names]
    lines += ["    new.__class__ = cls", "    return new"]
    exec("\n".join(lines), namespace)  # generated from the class's own fields
    make: Callable[..., A] = namespace["make"]
    return make
