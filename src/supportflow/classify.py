"""The classification engine: rules that read a ticket and say what it is and who takes it.

A :class:`Classifier` holds ordered :class:`Rule` objects (a condition ``when`` and actions
``then``), a :class:`PriorityMatrix` (impact × urgency → priority) and a list of sensitive words
(media, regulators, lawyers, ...) that raise an early warning. It is pure:
:meth:`Classifier.classify` takes a :class:`~supportflow.model.Ticket` and returns a
:class:`Classification` saying what to change and, in :class:`Reason` rows, why. Nothing is
stored and no clock is read.

>>> classifier = Classifier([
...     Rule("vpn", Keywords(["vpn", "断网"]), [SetCategory("network"), RouteTo("netops")]),
... ])
>>> result = classifier.classify(ticket)  # doctest: +SKIP
>>> result.category, result.group  # doctest: +SKIP
('network', 'netops')

Rules can also be data (:meth:`Classifier.from_dict`, :meth:`Classifier.to_dict`); the schema
is described in ``docs/classification.md``.
"""

from __future__ import annotations

import json
import re
import typing as t
from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

from supportflow._textmatch import Automaton, normalize
from supportflow.errors import ValidationError
from supportflow.model import Channel, Priority, Role, Ticket, coerce_enum

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_SENSITIVE_WORDS",
    "EARLY_WARNING_TAG",
    "Action",
    "AddTags",
    "All",
    "Any",
    "AssignTo",
    "CapPriority",
    "CategoryIs",
    "ChannelIs",
    "Classification",
    "Classifier",
    "Condition",
    "FieldEquals",
    "FlagTeamLead",
    "HasTag",
    "IsVip",
    "Keywords",
    "MatchContext",
    "Not",
    "PriorityMatrix",
    "RaisePriority",
    "Reason",
    "Regex",
    "RouteTo",
    "Rule",
    "SetCategory",
    "SetFingerprint",
    "SetImpactUrgency",
    "TierIs",
    "fingerprint",
    "normalize",
]

EARLY_WARNING_TAG: t.Final = "early-warning"
DEFAULT_FIELDS: t.Final = ("subject", "description")
#: Words that mean a complaint may reach the media, a regulator or a court. Bare "press" is left
#: out on purpose: "press the reset button" is everyday support language.
DEFAULT_SENSITIVE_WORDS: t.Final[tuple[str, ...]] = (
    *("记者", "主持人", "报社", "电视台", "节目", "栏目组", "曝光", "媒体", "工商局", "市场监管"),
    *("上门", "找领导", "报警", "找负责人", "律师", "起诉", "法院", "投诉到", "消协", "12315"),
    *("journalist", "reporter", "newspaper", "media", "the press", "police", "regulator"),
    *("ombudsman", "lawyer", "attorney", "solicitor", "sue", "suing", "lawsuit", "legal action"),
    *("court", "your manager", "your boss", "your supervisor", "consumer protection"),
    *("trading standards", "better business bureau"),
)
_SENSITIVE_FIELDS = ("subject", "description", "messages")
_ORDERED = frozenset({"raise_priority", "cap_priority"})  # the actions whose order matters
_LEVELS = ("high", "medium", "low")
_DEFAULT_TABLE = dict(
    zip(
        ((impact, urgency) for impact in _LEVELS for urgency in _LEVELS),
        ("urgent", "high", "normal", "high", "normal", "low", "normal", "low", "low"),
        strict=True,
    )
)


def _level(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, value, "a level name such as high, medium or low")
    return value.strip().casefold()


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, value, "a non-empty string")
    return value


def _non_empty(_: object, attribute: attrs.Attribute[t.Any], value: object) -> None:
    _text(value, attribute.name)


def _texts(values: Iterable[object], field: str, what: str = "value") -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValidationError(field, values, f"a list of {what}s, not a single string")
    items = tuple(_text(value, f"{field}[{index}]") for index, value in enumerate(values))
    if not items:
        raise ValidationError(field, items, f"at least one {what}")
    return items


class PriorityMatrix:
    """Impact × urgency → :class:`Priority`; the default is the ITIL matrix.

    ``table`` maps ``(impact, urgency)`` pairs to priorities and must cover every pair of the
    levels it names, so a desk can use its own levels.

    >>> PriorityMatrix().decide("high", "medium")
    <Priority.HIGH: 'high'>
    >>> PriorityMatrix({("p1", "now"): "urgent"}).decide("P1", "now")
    <Priority.URGENT: 'urgent'>
    """

    __slots__ = ("_table", "impacts", "urgencies")

    def __init__(self, table: Mapping[tuple[str, str], Priority | str] | None = None) -> None:
        table = _DEFAULT_TABLE if table is None else table
        parsed: dict[tuple[str, str], Priority] = {}
        for key, value in table.items():
            if not isinstance(key, tuple) or len(key) != 2:
                raise ValidationError("matrix", key, "an (impact, urgency) pair")
            impact, urgency = _level(key[0], "matrix.impact"), _level(key[1], "matrix.urgency")
            parsed[impact, urgency] = coerce_enum(Priority, value, f"matrix.{impact}.{urgency}")
        self.impacts = tuple(dict.fromkeys(impact for impact, _ in parsed))
        self.urgencies = tuple(dict.fromkeys(urgency for _, urgency in parsed))
        missing = [f"{i}/{u}" for i in self.impacts for u in self.urgencies if (i, u) not in parsed]
        if missing or not parsed:
            raise ValidationError("matrix", missing, "a priority for every impact × urgency pair")
        self._table = parsed

    def check(self, name: str, level: object, field: str | None = None) -> str:
        """``level`` in its normal form; ``ValidationError`` naming ``field`` if it is unknown."""
        levels = self.impacts if name == "impact" else self.urgencies
        folded = _level(level, field or name)
        if folded not in levels:
            raise ValidationError(field or name, level, f"one of {', '.join(levels)}")
        return folded

    def decide(self, impact: str, urgency: str) -> Priority:
        """The priority for an impact and an urgency level."""
        return self._table[self.check("impact", impact), self.check("urgency", urgency)]

    def to_dict(self) -> dict[str, dict[str, str]]:
        """``{impact: {urgency: priority}}``, the form used in rule documents."""
        return {i: {u: self._table[i, u].value for u in self.urgencies} for i in self.impacts}

    @classmethod
    def from_dict(cls, doc: object, path: str = "matrix") -> PriorityMatrix:
        """The inverse of :meth:`to_dict`; errors name the path of the bad entry."""
        if not isinstance(doc, Mapping) or not doc:
            raise ValidationError(path, doc, "an object {impact: {urgency: priority}}")
        table: dict[tuple[str, str], str] = {}
        for impact, row in doc.items():
            if not isinstance(row, Mapping) or not row:
                raise ValidationError(f"{path}.{impact}", row, "an object {urgency: priority}")
            for urgency, priority in row.items():
                coerce_enum(Priority, priority, f"{path}.{impact}.{urgency}")
                table[impact, urgency] = priority
        try:
            return cls(table)
        except ValidationError as error:
            raise ValidationError(path, error.value, error.expected) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriorityMatrix) and self._table == other._table

    def __hash__(self) -> int:
        return hash(frozenset(self._table.items()))

    def __repr__(self) -> str:
        return f"PriorityMatrix({self.to_dict()!r})"


_DEFAULT_MATRIX = PriorityMatrix()
_T = t.TypeVar("_T")

# ---------------------------------------------------------------------------------- conditions

#: What a matching condition found: (words, fields) for the :class:`Reason`.
Evidence = tuple[tuple[str, ...], tuple[str, ...]]


class MatchContext:
    """What conditions see while one ticket is classified: the ticket, its normalised text and
    keyword hits per field, and the category and tags as earlier rules left them."""

    __slots__ = ("_automaton", "_hits", "_texts", "category", "tags", "ticket")

    def __init__(self, ticket: Ticket, automaton: Automaton, scan: Sequence[str] = ()) -> None:
        self.ticket = ticket
        self.category = ticket.category
        self.tags: set[str] = set(ticket.tags)
        self._automaton = automaton
        self._texts = {field: normalize(_field_text(ticket, field)) for field in scan}
        # One pass over all the fields the rules read, rather than one per field.
        found = automaton.find_each([self._texts[field] for field in scan])
        self._hits: dict[str, set[str]] = dict(zip(scan, found, strict=True))

    def text(self, field: str) -> str:
        """The normalised text of ``field`` (``subject``, ``description``, ``messages``, or
        ``fields.<name>`` for a custom text field)."""
        if field not in self._texts:
            self._texts[field] = normalize(_field_text(self.ticket, field))
        return self._texts[field]

    def hits(self, field: str) -> set[str]:
        """The normalised keywords (of every rule) found in ``field``."""
        if field not in self._hits:
            text = self.text(field)
            self._hits[field] = self._automaton.find(text) if text else set()
        return self._hits[field]


def _field_text(ticket: Ticket, field: str) -> str:
    if field in ("subject", "description"):
        return ticket.subject if field == "subject" else ticket.description
    if field == "messages":  # customer messages only: an agent quoting "lawyer" is no threat
        return "\n".join(m.body for m in ticket.messages if m.role is Role.CUSTOMER)
    value = ticket.fields.get(field.removeprefix("fields."))
    return value if isinstance(value, str) else ""


def _check_fields(fields: Iterable[object], path: str = "fields") -> tuple[str, ...]:
    checked = _texts(fields, path, "field")
    for index, field in enumerate(checked):
        if field not in _SENSITIVE_FIELDS and not field.startswith("fields."):
            expected = "subject, description, messages or fields.<name>"
            raise ValidationError(f"{path}[{index}]", field, expected)
    return checked


class Condition:
    """A test on a ticket. Combine with ``&`` (:class:`All`), ``|`` (:class:`Any`) and ``~``
    (:class:`Not`).

    >>> ChannelIs("chat") & ~IsVip()
    All(conditions=(ChannelIs(channels=(<Channel.CHAT: 'chat'>,)), Not(condition=IsVip())))
    """

    __slots__ = ()

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """``None`` if the ticket does not match, else the words and fields that made it match."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, t.Any]:
        """The condition in the document schema."""
        raise NotImplementedError

    def __and__(self, other: Condition) -> All:
        return All(self, other)

    def __or__(self, other: Condition) -> Any:
        return Any(self, other)

    def __invert__(self) -> Not:
        return Not(self)


@attrs.frozen(init=False)
class Keywords(Condition):
    """Any of ``words`` occurs in ``fields``: CJK words as substrings, others as whole words.

    ``index`` maps each normalised word to the position of its first spelling in ``words``.

    >>> Keywords(["VPN", "断网", "vpn"]).index
    {'vpn': 0, '断网': 1}
    """

    words: tuple[str, ...]
    fields: tuple[str, ...]
    index: dict[str, int] = attrs.field(init=False, eq=False, repr=False)

    def __init__(self, words: Iterable[str], fields: Iterable[str] = DEFAULT_FIELDS) -> None:
        words = _texts(words, "words", "keyword")
        index: dict[str, int] = {}
        for position, word in enumerate(words):
            index.setdefault(normalize(word), position)
        self.__attrs_init__(words, _check_fields(fields))
        object.__setattr__(self, "index", index)  # derived, so attrs.evolve recomputes it

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        found = {f: hits for f in self.fields if (hits := ctx.hits(f).intersection(self.index))}
        if not found:
            return None
        every = set().union(*found.values())
        words = tuple(self.words[i] for i in sorted(self.index[word] for word in every))
        return words, tuple(found)

    def to_dict(self) -> dict[str, t.Any]:
        fields = {} if self.fields == DEFAULT_FIELDS else {"fields": list(self.fields)}
        return {"keywords": list(self.words), **fields}


@attrs.frozen(init=False)
class Regex(Condition):
    """``pattern`` (case-insensitive) is found in the normalised text of ``fields``.

    The text is normalised first (half-width, lower case, single spaces), so write patterns
    for that form. Reports the matched text.

    >>> Regex(r"order\\s*#?\\d{6}").pattern
    'order\\\\s*#?\\\\d{6}'
    """

    pattern: str
    fields: tuple[str, ...]
    compiled: re.Pattern[str] = attrs.field(init=False, eq=False, repr=False)

    def __init__(self, pattern: str, fields: Iterable[str] = DEFAULT_FIELDS) -> None:
        try:
            compiled = re.compile(_text(pattern, "pattern"), re.IGNORECASE)
        except re.error as error:
            expected = f"a valid regular expression ({error})"
            raise ValidationError("pattern", pattern, expected) from None
        self.__attrs_init__(pattern, _check_fields(fields))
        object.__setattr__(self, "compiled", compiled)

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        found = [(m.group(), f) for f in self.fields if (m := self.compiled.search(ctx.text(f)))]
        return (tuple(w for w, _ in found), tuple(f for _, f in found)) if found else None

    def to_dict(self) -> dict[str, t.Any]:
        fields = {} if self.fields == DEFAULT_FIELDS else {"fields": list(self.fields)}
        return {"regex": self.pattern, **fields}


@attrs.frozen(init=False)
class ChannelIs(Condition):
    """The ticket came in on one of ``channels``.

    >>> ChannelIs("chat", "phone").channels
    (<Channel.CHAT: 'chat'>, <Channel.PHONE: 'phone'>)
    """

    channels: tuple[Channel, ...]

    def __init__(self, *channels: Channel | str) -> None:
        checked = _texts((c.value if isinstance(c, Channel) else c for c in channels), "channels")
        self.__attrs_init__(tuple(coerce_enum(Channel, c, "channels") for c in checked))

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        channel = ctx.ticket.channel
        return ((), (f"channel={channel.value}",)) if channel in self.channels else None

    def to_dict(self) -> dict[str, t.Any]:
        return {"channel": [channel.value for channel in self.channels]}


@attrs.frozen(init=False)
class _OneOf(Condition):
    """Some string of the ticket equals (casefolded) one of ``values``."""

    values: tuple[str, ...]
    folded: frozenset[str] = attrs.field(eq=False, repr=False)
    key: t.ClassVar[str]

    def __init__(self, *values: str) -> None:
        values = _texts(values, self.key)
        self.__attrs_init__(values, frozenset(value.casefold() for value in values))

    def actual(self, ctx: MatchContext) -> Iterable[str]:
        raise NotImplementedError

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        seen = tuple(
            f"{self.key}={v}" for v in sorted(self.actual(ctx)) if v.casefold() in self.folded
        )
        return ((), seen) if seen else None

    def to_dict(self) -> dict[str, t.Any]:
        return {self.key: list(self.values)}


@attrs.frozen(init=False)
class TierIs(_OneOf):
    """The customer's tier is one of the given tiers (any case). ``TierIs("vip", "gold")``."""

    key = "tier"

    def actual(self, ctx: MatchContext) -> Iterable[str]:
        return (ctx.ticket.customer.tier,)


@attrs.frozen(init=False)
class CategoryIs(_OneOf):
    """The category, as the ticket and earlier rules left it, is one of ``categories``."""

    key = "category"

    def actual(self, ctx: MatchContext) -> Iterable[str]:
        return (ctx.category,) if ctx.category else ()


@attrs.frozen(init=False)
class HasTag(_OneOf):
    """The ticket, or an earlier rule, has one of ``tags``."""

    key = "tag"

    def actual(self, ctx: MatchContext) -> Iterable[str]:
        return ctx.tags


@attrs.frozen
class IsVip(Condition):
    """The customer is a VIP (``Customer.is_vip``)."""

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        return ((), ("tier=vip",)) if ctx.ticket.customer.is_vip else None

    def to_dict(self) -> dict[str, t.Any]:
        return {"vip": True}


_TICKET_ATTRS = ("kind", "status", "channel", "priority", "group", "assignee", "impact", "urgency")


@attrs.frozen
class FieldEquals(Condition):
    """A field equals ``value``: ``customer.<attr>``, a ticket attribute (``kind``, ``status``,
    ``channel``, ``priority``, ``category`` as earlier rules left it, ...), else the custom
    field ``name`` (``ticket.fields[name]``; a ``fields.`` prefix is allowed).

    >>> FieldEquals("customer.language", "zh").to_dict()
    {'field': {'name': 'customer.language', 'equals': 'zh'}}
    """

    name: str = attrs.field(validator=_non_empty)
    value: t.Any

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        ticket, name, missing = ctx.ticket, self.name, object()
        if name.startswith("customer."):
            actual = getattr(ticket.customer, name.removeprefix("customer."), missing)
        elif name == "category":
            actual = ctx.category
        elif name in _TICKET_ATTRS:
            actual = getattr(ticket, name)
        else:
            actual = ticket.fields.get(name.removeprefix("fields."), missing)
        return ((), (f"{name}={self.value}",)) if actual == self.value else None

    def to_dict(self) -> dict[str, t.Any]:
        return {"field": {"name": self.name, "equals": self.value}}


def _conditions(values: tuple[Condition, ...], field: str) -> tuple[Condition, ...]:
    for index, value in enumerate(values):
        if not isinstance(value, Condition):
            raise ValidationError(f"{field}[{index}]", value, "a Condition")
    if not values:
        raise ValidationError(field, values, "at least one condition")
    return values


@attrs.frozen(init=False)
class All(Condition):
    """Every one of ``conditions`` matches. ``All(IsVip(), ChannelIs("phone"))``."""

    conditions: tuple[Condition, ...]

    def __init__(self, *conditions: Condition) -> None:
        self.__attrs_init__(_conditions(conditions, "all"))

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        found = [condition.evaluate(ctx) for condition in self.conditions]
        return None if None in found else _merge(found)

    def to_dict(self) -> dict[str, t.Any]:
        return {"all": [condition.to_dict() for condition in self.conditions]}


@attrs.frozen(init=False)
class Any(Condition):
    """At least one of ``conditions`` matches; evidence comes from every one that does."""

    conditions: tuple[Condition, ...]

    def __init__(self, *conditions: Condition) -> None:
        self.__attrs_init__(_conditions(conditions, "any"))

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        found = [e for e in (condition.evaluate(ctx) for condition in self.conditions) if e]
        return _merge(found) if found else None

    def to_dict(self) -> dict[str, t.Any]:
        return {"any": [condition.to_dict() for condition in self.conditions]}


@attrs.frozen
class Not(Condition):
    """``condition`` does not match. ``Not(TierIs("internal"))``."""

    condition: Condition = attrs.field(validator=attrs.validators.instance_of(Condition))

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        return ((), ()) if self.condition.evaluate(ctx) is None else None

    def to_dict(self) -> dict[str, t.Any]:
        return {"not": self.condition.to_dict()}


def _merge(found: Iterable[Evidence | None]) -> Evidence:
    words: dict[str, None] = {}
    fields: dict[str, None] = {}
    for evidence in found:
        if evidence:
            words.update(dict.fromkeys(evidence[0]))
            fields.update(dict.fromkeys(evidence[1]))
    return tuple(words), tuple(fields)


def _walk(condition: Condition) -> Iterable[Condition]:
    yield condition
    if isinstance(condition, (All, Any)):
        for child in condition.conditions:
            yield from _walk(child)
    elif isinstance(condition, Not):
        yield from _walk(condition.condition)


def _required(condition: Condition) -> frozenset[str] | None:
    """Normalised words of which at least one must be found for ``condition`` to match, or None
    if it can match without any. Lets the classifier skip rules whose keywords are absent."""
    if isinstance(condition, Keywords):
        return frozenset(condition.index)
    if isinstance(condition, All):
        options = [r for r in map(_required, condition.conditions) if r is not None]
        return min(options, key=len) if options else None
    if isinstance(condition, Any):
        union: set[str] = set()
        for child in condition.conditions:
            required = _required(child)
            if required is None:
                return None
            union |= required
        return frozenset(union)
    return None


# ------------------------------------------------------------------------------------- actions


class _Draft:
    """The classification being built while the rules run."""

    def __init__(self, ctx: MatchContext) -> None:
        self.ctx = ctx
        self.impact: str | None = None
        self.urgency: str | None = None
        self.priority_steps: list[tuple[str, Priority, str]] = []  # (raise|cap, to, rule)
        self.added_tags: dict[str, None] = {}
        self.group: str | None = None
        self.assignee: str | None = None
        self.flag = False
        self.reasons: list[Reason] = []


class Action:
    """Something a matching rule does. ``apply`` returns the detail for the :class:`Reason`."""

    __slots__ = ()
    kind: t.ClassVar[str]

    def apply(self, draft: _Draft, rule: str) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, t.Any]:
        """The action as entries of a rule's ``then`` object."""
        raise NotImplementedError


@attrs.frozen
class SetCategory(Action):
    """Set the category; a later rule's category replaces an earlier one's."""

    name: str = attrs.field(validator=_non_empty)
    kind = "set_category"

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.ctx.category = self.name
        return self.name

    def to_dict(self) -> dict[str, t.Any]:
        return {"category": self.name}


def _impact(value: str | None) -> str | None:
    return None if value is None else _level(value, "impact")


def _urgency(value: str | None) -> str | None:
    return None if value is None else _level(value, "urgency")


@attrs.frozen
class SetImpactUrgency(Action):
    """Set impact and/or urgency; the :class:`PriorityMatrix` turns them into a priority.

    >>> SetImpactUrgency(impact="High").to_dict()
    {'impact': 'high'}
    """

    impact: str | None = attrs.field(default=None, converter=_impact)
    urgency: str | None = attrs.field(default=None, converter=_urgency)
    kind = "set_impact_urgency"

    def __attrs_post_init__(self) -> None:
        if self.impact is None and self.urgency is None:
            raise ValidationError("impact", None, "an impact or an urgency level")

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.impact = self.impact or draft.impact
        draft.urgency = self.urgency or draft.urgency
        return " ".join(f"{k}={v}" for k, v in self.to_dict().items())

    def to_dict(self) -> dict[str, t.Any]:
        return {k: v for k, v in (("impact", self.impact), ("urgency", self.urgency)) if v}


def _to_priority(value: Priority | str) -> Priority:
    priority: Priority = coerce_enum(Priority, value, "to")
    return priority


@attrs.frozen
class RaisePriority(Action):
    """Priority at least ``to`` (never lowers it). ``RaisePriority("high")``."""

    to: Priority = attrs.field(converter=_to_priority)
    kind = "raise_priority"

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.priority_steps.append(("raise", self.to, rule))
        return f"at least {self.to.value}"

    def to_dict(self) -> dict[str, t.Any]:
        return {"raise_priority": self.to.value}


@attrs.frozen
class CapPriority(Action):
    """Priority at most ``to``; never below a priority an agent set explicitly."""

    to: Priority = attrs.field(converter=_to_priority)
    kind = "cap_priority"

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.priority_steps.append(("cap", self.to, rule))
        return f"at most {self.to.value}"

    def to_dict(self) -> dict[str, t.Any]:
        return {"cap_priority": self.to.value}


@attrs.frozen(init=False)
class AddTags(Action):
    """Add tags. ``AddTags("refund", "vip")``."""

    tags: tuple[str, ...]
    kind = "add_tags"

    def __init__(self, *tags: str) -> None:
        self.__attrs_init__(_texts(tags, "tags", "tag"))

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.added_tags.update(dict.fromkeys(self.tags))
        draft.ctx.tags.update(self.tags)
        return ", ".join(self.tags)

    def to_dict(self) -> dict[str, t.Any]:
        return {"tags": list(self.tags)}


@attrs.frozen
class RouteTo(Action):
    """Put the ticket in a group's queue."""

    group: str = attrs.field(validator=_non_empty)
    kind = "route_to"

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.group = self.group
        return self.group

    def to_dict(self) -> dict[str, t.Any]:
        return {"route_to": self.group}


@attrs.frozen
class AssignTo(Action):
    """Assign the ticket to an agent."""

    assignee: str = attrs.field(validator=_non_empty)
    kind = "assign_to"

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.assignee = self.assignee
        return self.assignee

    def to_dict(self) -> dict[str, t.Any]:
        return {"assign_to": self.assignee}


@attrs.frozen
class FlagTeamLead(Action):
    """Ask the team lead to look at the ticket; ``reason`` is shown to them."""

    reason: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    kind = "flag_team_lead"

    def apply(self, draft: _Draft, rule: str) -> str:
        draft.flag = True
        return self.reason

    def to_dict(self) -> dict[str, t.Any]:
        return {"flag_team_lead": self.reason or True}


@attrs.frozen
class SetFingerprint(Action):
    """Give the ticket a mass-incident key, e.g. ``"outage-0311-vpn"`` (see :func:`fingerprint`)."""

    key: str = attrs.field(validator=_non_empty)
    kind = "set_fingerprint"

    def apply(self, draft: _Draft, rule: str) -> str:
        return self.key

    def to_dict(self) -> dict[str, t.Any]:
        return {"fingerprint": self.key}


def _actions(actions: Iterable[Action]) -> tuple[Action, ...]:
    if isinstance(actions, Action):
        actions = (actions,)
    for index, action in enumerate(actions := tuple(actions)):
        if not isinstance(action, Action):
            raise ValidationError(f"then[{index}]", action, "an Action")
    return actions


@attrs.frozen
class Rule:
    """When ``when`` matches, do ``then`` in order; ``stop=True`` skips the rules after it.

    >>> Rule("vip", IsVip(), [RouteTo("vip-desk"), RaisePriority("high")]).name
    'vip'
    """

    name: str = attrs.field(validator=_non_empty)
    when: Condition = attrs.field(validator=attrs.validators.instance_of(Condition))
    then: tuple[Action, ...] = attrs.field(default=(), converter=_actions)
    stop: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def to_dict(self) -> dict[str, t.Any]:
        """The rule in the document schema; ``then`` is a list only if one object can't say it
        (an action twice, or both a raise and a cap, whose order matters)."""
        then: t.Any = {}
        for action in self.then:
            entries = action.to_dict()
            if then.keys() & entries.keys() or (then.keys() | entries.keys()) >= _ORDERED:
                then = [action.to_dict() for action in self.then]
                break
            then.update(entries)
        return {"name": self.name, "when": self.when.to_dict(), "then": then} | (
            {"stop": True} if self.stop else {}
        )


@attrs.frozen
class Reason:
    """Why part of a classification happened: ``rule`` did ``action`` (with ``detail``) because
    ``matched`` words were found; ``fields`` says where (``subject``) or which attributes
    matched (``channel=chat``). Built-in steps use rule names in angle brackets:
    ``<matrix>``, ``<explicit-priority>``, ``<early-warning>``."""

    rule: str
    action: str
    detail: str
    matched: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()


@attrs.frozen
class Classification:
    """What the classifier concluded. ``category``, ``impact``, ``urgency``, ``group`` and
    ``assignee`` are the resulting values (the ticket's own unless a rule set them); ``tags``
    are the tags to add."""

    category: str | None
    impact: str | None
    urgency: str | None
    priority: Priority
    tags: frozenset[str]
    group: str | None
    assignee: str | None
    flag_team_lead: bool
    early_warning_words: tuple[str, ...]
    fingerprint: str | None
    reasons: tuple[Reason, ...]

    def changes(self, ticket: Ticket) -> dict[str, t.Any]:
        """The ticket attributes that differ, for ``attrs.evolve(ticket, **changes)``."""
        wanted = {name: getattr(self, name) for name in _CHANGED}
        wanted["tags"] = ticket.tags | self.tags
        return {k: v for k, v in wanted.items() if getattr(ticket, k) != v}


_CHANGED = ("category", "impact", "urgency", "priority", "group", "assignee")


def fingerprint(ticket: Ticket, classification: Classification) -> str | None:
    """The mass-incident key: the last rule-given key, else the category with the sorted,
    normalised words that matched the rules setting that category, else ``None``.

    Tickets with equal keys are candidates for one incident (``"network|vpn|断网"``).
    """
    return _fingerprint(classification.reasons, classification.category or ticket.category)


def _fingerprint(reasons: Sequence[Reason], category: str | None) -> str | None:
    for reason in reversed(reasons):
        if reason.action == SetFingerprint.kind:
            return reason.detail
    if not category:
        return None
    terms = {
        normalize(word)
        for reason in reasons
        if reason.action == SetCategory.kind and reason.detail == category
        for word in reason.matched
    }
    return "|".join((normalize(category), *sorted(terms)))


# ---------------------------------------------------------------------------------- classifier


class Classifier:
    """Ordered rules, a priority matrix and sensitive words, compiled once for fast matching.

    Every keyword of every rule, and every sensitive word, goes into one automaton when the
    classifier is built; classifying scans each text field once and only evaluates the rules
    that could match (those with a found keyword, and those that need none).

    >>> classifier = Classifier([Rule("vpn", Keywords(["vpn"]), [SetCategory("network")])])
    >>> [rule.name for rule in classifier.rules], classifier.matrix == PriorityMatrix()
    (['vpn'], True)
    """

    __slots__ = (
        "_always",
        "_automaton",
        "_by_word",
        "_fields",
        "_sensitive",
        "_sensitive_set",
        "_warn",
        "matrix",
        "rules",
    )

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        matrix: PriorityMatrix = _DEFAULT_MATRIX,
        sensitive_words: Collection[str] | None = DEFAULT_SENSITIVE_WORDS,
    ) -> None:
        if not isinstance(matrix, PriorityMatrix):
            raise ValidationError("matrix", matrix, "a PriorityMatrix")
        self.rules, self.matrix = tuple(rules), matrix
        words: set[str] = set()
        fields: dict[str, None] = {}
        by_word: dict[str, list[int]] = {}
        always: list[int] = []
        for index, rule in enumerate(self.rules):
            self._check(index, rule)
            for condition in _walk(rule.when):
                if isinstance(condition, Keywords):
                    words.update(condition.index)
                    fields.update(dict.fromkeys(condition.fields))
            required = _required(rule.when)
            if required is None:
                always.append(index)
            for word in required or ():
                by_word.setdefault(word, []).append(index)
        self._warn = sensitive_words is not None
        checked = _texts(sensitive_words, "sensitive_words", "word") if sensitive_words else ()
        self._sensitive = tuple((word, normalize(word)) for word in checked)
        self._sensitive_set = frozenset(normal for _, normal in self._sensitive)
        if self._sensitive:
            words.update(self._sensitive_set)
            fields.update(dict.fromkeys(_SENSITIVE_FIELDS))
        self._automaton = Automaton(words)
        self._fields = tuple(fields)
        self._always = frozenset(always)
        self._by_word = {word: tuple(indexes) for word, indexes in by_word.items()}

    def _check(self, index: int, rule: Rule) -> None:
        path = f"rules[{index}]"
        if not isinstance(rule, Rule):
            raise ValidationError(path, rule, "a Rule")
        if any(other.name == rule.name for other in self.rules[:index]):
            raise ValidationError(f"{path}.name", rule.name, "a name no earlier rule uses")
        for action in rule.then:
            if isinstance(action, SetImpactUrgency):
                for name in ("impact", "urgency"):
                    if (level := getattr(action, name)) is not None:
                        self.matrix.check(name, level, f"{path}.then.{name}")

    @property
    def sensitive_words(self) -> tuple[str, ...] | None:
        """The early-warning words, or ``None`` when early warning is off."""
        return tuple(word for word, _ in self._sensitive) if self._warn else None

    def classify(self, ticket: Ticket) -> Classification:
        """Run the rules, the matrix and the early warning on ``ticket``."""
        ctx = MatchContext(ticket, self._automaton, self._fields)
        draft = _Draft(ctx)
        found: set[str] = set().union(*(ctx.hits(field) for field in self._fields))
        candidates = set(self._always)
        for word in found:
            candidates.update(self._by_word.get(word, ()))
        for index in sorted(candidates):  # rule order, whatever order the words were found in
            rule = self.rules[index]
            evidence = rule.when.evaluate(ctx)
            if evidence is None:
                continue
            for action in rule.then:
                draft.reasons.append(
                    Reason(rule.name, action.kind, action.apply(draft, rule.name), *evidence)
                )
            if rule.stop:
                draft.reasons.append(Reason(rule.name, "stop", "later rules skipped", *evidence))
                break
        warned = self._early_warning(ctx, draft)
        priority = self._priority(ticket, draft, bool(warned))
        return Classification(
            category=ctx.category,
            impact=draft.impact or ticket.impact,
            urgency=draft.urgency or ticket.urgency,
            priority=priority,
            tags=frozenset(draft.added_tags),
            group=draft.group or ticket.group,
            assignee=draft.assignee or ticket.assignee,
            flag_team_lead=draft.flag,
            early_warning_words=warned,
            fingerprint=_fingerprint(draft.reasons, ctx.category),
            reasons=tuple(draft.reasons),
        )

    def _early_warning(self, ctx: MatchContext, draft: _Draft) -> tuple[str, ...]:
        """The sensitive words found, as spelled in the list; tags, flags and notes them."""
        if not self._sensitive_set:
            return ()
        where = {f: hit for f in _SENSITIVE_FIELDS if (hit := ctx.hits(f) & self._sensitive_set)}
        if not where:
            return ()
        found = set().union(*where.values())
        warned = tuple(word for word, normal in self._sensitive if normal in found)
        draft.added_tags[EARLY_WARNING_TAG] = None
        draft.flag = True
        detail = f"sensitive words: tag {EARLY_WARNING_TAG}, priority at least high, flag lead"
        draft.reasons.append(Reason("<early-warning>", "early_warning", detail, warned, (*where,)))
        return warned

    def _priority(self, ticket: Ticket, draft: _Draft, warned: bool) -> Priority:
        priority, explicit, note = ticket.priority, ticket.priority_explicit, draft.reasons.append
        impact, urgency = draft.impact or ticket.impact, draft.urgency or ticket.urgency
        if impact is not None and urgency is not None:
            decided = self.matrix.decide(impact, urgency)
            if not explicit:
                priority = decided
                note(Reason("<matrix>", "set_priority", f"{impact} × {urgency} → {decided.value}"))
            elif decided != priority:
                detail = f"explicit {priority.value} kept; the matrix gives {decided.value}"
                note(Reason("<explicit-priority>", "keep_priority", detail))
        floor = ticket.priority if explicit else Priority.LOW  # rules never go below an agent
        steps = draft.priority_steps
        if warned:  # last: a complaint that may reach the media or a court outranks any cap
            steps = [*steps, ("raise", Priority.HIGH, "<early-warning>")]
        for step, to, rule in steps:
            before = priority
            priority = max(priority, to) if step == "raise" else max(min(priority, to), floor)
            if explicit and priority > before:
                detail = f"explicit {floor.value} raised to {priority.value} by {rule}"
                note(Reason("<explicit-priority>", "raise_priority", detail))
            elif explicit and step == "cap" and to < floor:
                detail = f"explicit {floor.value} kept; {rule} caps at {to.value}"
                note(Reason("<explicit-priority>", "keep_priority", detail))
        return priority

    # ------------------------------------------------------------------------- rules as data

    def to_dict(self) -> dict[str, t.Any]:
        """The classifier as a JSON-ready document (see :meth:`from_dict`); defaults left out."""
        doc: dict[str, t.Any] = {"rules": [rule.to_dict() for rule in self.rules]}
        words = self.sensitive_words
        if words != DEFAULT_SENSITIVE_WORDS:
            doc["sensitive_words"] = None if words is None else list(words)
        if self.matrix != _DEFAULT_MATRIX:
            doc["matrix"] = self.matrix.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, t.Any]) -> Classifier:
        """Build a classifier from a document; ``ValidationError.field`` is the path of the
        first bad entry, such as ``rules[3].when.any[0].keywords``.

        >>> try:
        ...     Classifier.from_dict({"rules": [{"name": "x", "when": {"keywords": "vpn"}}]})
        ... except ValidationError as error:
        ...     print(error.field, "|", error.expected)
        rules[0].when.keywords | a list of keywords
        """
        if not isinstance(doc, Mapping):
            raise ValidationError("document", doc, 'an object {"rules": [...]}')
        _known(doc, "", ("rules", "sensitive_words", "matrix"))
        rules = doc.get("rules")
        if not isinstance(rules, list):
            raise ValidationError("rules", rules, "a list of rules")
        words = doc.get("sensitive_words", DEFAULT_SENSITIVE_WORDS)
        if words is not None and not isinstance(words, (list, tuple)):
            raise ValidationError("sensitive_words", words, "a list of words, or null for none")
        matrix = doc.get("matrix")
        return cls(
            [_parse_rule(rule, f"rules[{index}]") for index, rule in enumerate(rules)],
            matrix=_DEFAULT_MATRIX if matrix is None else PriorityMatrix.from_dict(matrix),
            sensitive_words=words,
        )

    @classmethod
    def from_json(cls, text: str) -> Classifier:
        """:meth:`from_dict` on a JSON text."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as error:
            where = f"line {error.lineno} column {error.colno}"
            expected = f"valid JSON ({error.msg} at {where})"
            raise ValidationError("json", text[:60], expected) from None
        return cls.from_dict(doc)

    def __repr__(self) -> str:
        return f"<Classifier {len(self.rules)} rules, {len(self._automaton.words)} words>"


def _known(doc: Mapping[str, t.Any], path: str, keys: Sequence[str]) -> None:
    for key in doc:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            raise ValidationError(where, doc[key], f"no such key; known keys: {', '.join(keys)}")


def _build(path: str, factory: t.Callable[..., _T], *args: t.Any) -> _T:
    """``factory(*args)``, with a ``ValidationError`` re-raised under ``path``."""
    try:
        return factory(*args)
    except ValidationError as error:
        index = error.field[error.field.index("[") :] if "[" in error.field else ""
        raise ValidationError(path + index, error.value, error.expected) from None


def _list(value: object, path: str, of: str) -> list[t.Any]:
    if not isinstance(value, list):
        raise ValidationError(path, value, f"a list of {of}")
    return value


_ONE_OF: dict[str, type[_OneOf]] = {"tier": TierIs, "category": CategoryIs, "tag": HasTag}
_CONDITION_KEYS = ("keywords", "regex", "channel", "vip", "field", "all", "any", "not", *_ONE_OF)


def _parse_condition(doc: object, path: str) -> Condition:
    if not isinstance(doc, Mapping):
        raise ValidationError(path, doc, 'a condition object such as {"keywords": [...]}')
    keys = [key for key in doc if key != "fields"]
    if len(keys) != 1 or keys[0] not in _CONDITION_KEYS:
        raise ValidationError(path, doc, f"exactly one of {', '.join(_CONDITION_KEYS)}")
    key = keys[0]
    value, where = doc[key], f"{path}.{key}"
    fields: tuple[t.Any, ...] = ()
    if "fields" in doc:
        at = f"{path}.fields"
        if key not in ("keywords", "regex"):
            raise ValidationError(at, doc["fields"], "no fields beside " + key)
        fields = (_build(at, _check_fields, _list(doc["fields"], at, "fields")),)
    if key in ("all", "any"):
        children = [
            _parse_condition(c, f"{where}[{i}]")
            for i, c in enumerate(_list(value, where, "conditions"))
        ]
        return _build(where, All if key == "all" else Any, *children)
    if key == "not":
        return Not(_parse_condition(value, where))
    if key == "vip":
        if value is not True:
            raise ValidationError(where, value, "true")
        return IsVip()
    if key == "field":
        if not isinstance(value, Mapping) or set(value) != {"name", "equals"}:
            raise ValidationError(where, value, 'an object {"name": ..., "equals": ...}')
        return _build(f"{where}.name", FieldEquals, value["name"], value["equals"])
    if key == "regex":
        return _build(where, Regex, value, *fields)
    if key == "keywords":
        return _build(where, Keywords, _list(value, where, "keywords"), *fields)
    plural = {"channel": "channels", "tier": "tiers", "category": "categories", "tag": "tags"}
    return _build(where, _ONE_OF.get(key, ChannelIs), *_list(value, where, plural[key]))


_SIMPLE_ACTIONS: dict[str, t.Callable[[t.Any], Action]] = {
    "category": SetCategory,
    "raise_priority": RaisePriority,
    "cap_priority": CapPriority,
    "route_to": RouteTo,
    "assign_to": AssignTo,
    "fingerprint": SetFingerprint,
}
_ACTION_KEYS = ("impact", "urgency", "tags", "flag_team_lead", *_SIMPLE_ACTIONS)


def _parse_then(doc: object, path: str) -> list[Action]:
    if isinstance(doc, list):  # a list of action objects, run in order
        return [a for i, item in enumerate(doc) for a in _parse_then(item, f"{path}[{i}]")]
    if not isinstance(doc, Mapping):
        raise ValidationError(path, doc, "an object of actions, or a list of them")
    _known(doc, path, _ACTION_KEYS)
    actions: list[Action] = []
    if doc.keys() >= _ORDERED:  # object key order is lost by some stores (e.g. jsonb)
        expected = "a list of action objects when a rule both raises and caps, to fix the order"
        raise ValidationError(f"{path}.cap_priority", doc["cap_priority"], expected)
    for key, value in doc.items():
        where = f"{path}.{key}"
        if key in _SIMPLE_ACTIONS:
            actions.append(_build(where, _SIMPLE_ACTIONS[key], value))
        elif key == "tags":
            actions.append(_build(where, AddTags, *_list(value, where, "tags")))
        elif key == "flag_team_lead":
            if not isinstance(value, (bool, str)):
                raise ValidationError(where, value, "true, false or a reason for the team lead")
            actions.extend([FlagTeamLead(value if isinstance(value, str) else "")] if value else [])
        elif not any(isinstance(action, SetImpactUrgency) for action in actions):
            impact, urgency = doc.get("impact"), doc.get("urgency")
            try:
                actions.append(SetImpactUrgency(impact, urgency))
            except ValidationError as error:
                raise ValidationError(
                    f"{path}.{error.field}", error.value, error.expected
                ) from None
    return actions


def _parse_rule(doc: object, path: str) -> Rule:
    if not isinstance(doc, Mapping):
        raise ValidationError(path, doc, "a rule object with name, when and then")
    _known(doc, path, ("name", "when", "then", "stop"))
    for key in ("name", "when"):
        if key not in doc:
            raise ValidationError(f"{path}.{key}", None, f"a {key} (it is required)")
    stop = doc.get("stop", False)
    if not isinstance(stop, bool):
        raise ValidationError(f"{path}.stop", stop, "true or false")
    name = _build(f"{path}.name", _text, doc["name"], "name")
    when = _parse_condition(doc["when"], f"{path}.when")
    return Rule(name, when, _parse_then(doc.get("then", {}), f"{path}.then"), stop)
