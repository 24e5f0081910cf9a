"""Conditions of classification rules: the tests a rule makes on a ticket.

Private: the public names are re-exported by :mod:`supportflow.classify`, which is where users
import them from. Only the model, the errors and the text matcher are imported here.
"""

from __future__ import annotations

import abc
import re
import typing as t
from collections.abc import Iterable, Sequence

import attrs

from supportflow._textmatch import Automaton, normalize
from supportflow.errors import ValidationError
from supportflow.model import Channel, Customer, Role, Ticket, coerce_enum, tier_key

DEFAULT_FIELDS: t.Final = ("subject", "description")
#: The fields the early warning reads, and every field a condition may name.
SENSITIVE_FIELDS: t.Final = ("subject", "description", "messages")


def check_text(value: object, field: str) -> str:
    """``value`` if it is a non-empty string, else ``ValidationError(field, ...)``."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, value, "a non-empty string")
    return value


def non_empty(_: object, attribute: attrs.Attribute[t.Any], value: object) -> None:
    """An attrs validator: a non-empty string."""
    check_text(value, attribute.name)


def check_texts(values: Iterable[object], field: str, what: str = "value") -> tuple[str, ...]:
    """At least one non-empty string; a bare string is refused (it is not a list of them)."""
    if isinstance(values, str):
        raise ValidationError(field, values, f"a list of {what}s, not a single string")
    if not isinstance(values, Iterable):
        raise ValidationError(field, values, f"a list of {what}s")
    items = tuple(check_text(value, f"{field}[{index}]") for index, value in enumerate(values))
    if not items:
        raise ValidationError(field, items, f"at least one {what}")
    return items


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
        # One pass over all the fields the rules read, rather than one per field; messages
        # are read one by one, when asked for (``hits``).
        texts = [field for field in scan if field != "messages"]
        self._texts = {field: normalize(_field_text(ticket, field)) for field in texts}
        found = automaton.find_each([self._texts[field] for field in texts])
        self._hits: dict[str, set[str]] = dict(zip(texts, found, strict=True))

    def _message_hits(self) -> set[str]:
        # Message by message, each scanned once in the automaton's lifetime: a ticket is
        # classified again on every customer message, and re-reading the whole thread each
        # time would make a long chat quadratic.
        bodies = (m.body for m in self.ticket.messages if m.role is Role.CUSTOMER)
        return set().union(*map(self._automaton.find_message, bodies))

    def text(self, field: str) -> str:
        """The normalised text of ``field`` (``subject``, ``description``, ``messages``, or
        ``fields.<name>`` for a custom text field)."""
        if field not in self._texts:
            self._texts[field] = normalize(_field_text(self.ticket, field))
        return self._texts[field]

    def hits(self, field: str) -> set[str]:
        """The normalised keywords (of every rule) found in ``field``."""
        if field == "messages" and field not in self._hits:
            self._hits[field] = self._message_hits()
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


def check_fields(fields: Iterable[object], path: str = "fields") -> tuple[str, ...]:
    """Field names a text condition may read: ``subject``, ``description``, ``messages`` or
    ``fields.<name>``."""
    checked = check_texts(fields, path, "field")
    for index, field in enumerate(checked):
        if field not in SENSITIVE_FIELDS and not field.startswith("fields."):
            expected = "subject, description, messages or fields.<name>"
            raise ValidationError(f"{path}[{index}]", field, expected)
    return checked


class Condition(abc.ABC):
    """A test on a ticket. Combine with ``&`` (:class:`All`), ``|`` (:class:`Any`) and ``~``
    (:class:`Not`).

    >>> ChannelIs("chat") & ~IsVip()
    All(conditions=(ChannelIs(channels=(<Channel.CHAT: 'chat'>,)), Not(condition=IsVip())))
    """

    __slots__ = ()

    @abc.abstractmethod
    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """``None`` if the ticket does not match, else the words and fields that made it match."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, t.Any]:
        """The condition in the document schema."""

    def __and__(self, other: Condition) -> All:
        return All(self, other)

    def __or__(self, other: Condition) -> Any:
        return Any(self, other)

    def __invert__(self) -> Not:
        return Not(self)


@attrs.frozen(init=False)
class Keywords(Condition):
    """Any of ``words`` occurs in ``fields``: words of scripts without spaces (Chinese,
    Japanese, Thai, ...) as substrings, others as whole words.

    ``index`` maps each normalised word to the position of its first spelling in ``words``.

    >>> Keywords(["VPN", "断网", "vpn"]).index
    {'vpn': 0, '断网': 1}
    """

    words: tuple[str, ...]
    fields: tuple[str, ...]
    index: dict[str, int] = attrs.field(init=False, eq=False, repr=False)

    def __init__(self, words: Iterable[str], fields: Iterable[str] = DEFAULT_FIELDS) -> None:
        words = check_texts(words, "words", "keyword")
        index: dict[str, int] = {}
        for position, word in enumerate(words):
            index.setdefault(normalize(word), position)
        self.__attrs_init__(words, check_fields(fields))
        object.__setattr__(self, "index", index)  # derived, so attrs.evolve recomputes it

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """The words found (as first spelled in ``words``) and the fields they were found in;
        ``None`` when none is found."""
        found = {f: hits for f in self.fields if (hits := ctx.hits(f).intersection(self.index))}
        if not found:
            return None
        every = set().union(*found.values())
        words = tuple(self.words[i] for i in sorted(self.index[word] for word in every))
        return words, tuple(found)

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"keywords": [...]}``, plus ``"fields"`` when not the default."""
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
        check_text(pattern, "pattern")
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        # ``re`` also raises OverflowError (a repeat count over 4294967295) and RecursionError
        # (deeply nested groups) for patterns it cannot compile.
        except (re.error, OverflowError, RecursionError) as error:
            expected = f"a valid regular expression ({error})"
            raise ValidationError("pattern", pattern, expected) from None
        self.__attrs_init__(pattern, check_fields(fields))
        object.__setattr__(self, "compiled", compiled)

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """The matched text and the field of each field where ``pattern`` is found; ``None``
        when it is found in none."""
        found = [(m.group(), f) for f in self.fields if (m := self.compiled.search(ctx.text(f)))]
        return (tuple(w for w, _ in found), tuple(f for _, f in found)) if found else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"regex": pattern}``, plus ``"fields"`` when not the default."""
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
        names = (c.value if isinstance(c, Channel) else c for c in channels)
        checked = check_texts(names, "channels")
        self.__attrs_init__(tuple(coerce_enum(Channel, c, "channels") for c in checked))

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """``channel=<name>`` when the ticket came in on one of ``channels``, else ``None``."""
        channel = ctx.ticket.channel
        return ((), (f"channel={channel.value}",)) if channel in self.channels else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"channel": [...]}``."""
        return {"channel": [channel.value for channel in self.channels]}


@attrs.frozen(init=False)
class _OneOf(Condition):
    """Some string of the ticket equals (casefolded) one of ``values``."""

    values: tuple[str, ...]
    folded: frozenset[str] = attrs.field(eq=False, repr=False)
    key: t.ClassVar[str]

    def __init__(self, *values: str) -> None:
        values = check_texts(values, self.key)
        self.__attrs_init__(values, frozenset(self.fold(value) for value in values))

    @staticmethod
    def fold(value: str) -> str:
        """``value`` as compared: casefolded."""
        return value.casefold()

    @abc.abstractmethod
    def actual(self, ctx: MatchContext) -> Iterable[str]:
        """The ticket's values this condition compares (tiers, categories, tags)."""

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """``<key>=<value>`` for each of the ticket's values among ``values`` (casefolded);
        ``None`` when none is."""
        seen = tuple(
            f"{self.key}={v}" for v in sorted(self.actual(ctx)) if self.fold(v) in self.folded
        )
        return ((), seen) if seen else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{key: [...]}`` (``tier``, ``category`` or ``tag``)."""
        return {self.key: list(self.values)}


@attrs.frozen(init=False)
class TierIs(_OneOf):
    """The customer's tier is one of the given tiers (any case, surrounding spaces aside, as
    everywhere tiers are compared). ``TierIs("vip", "gold")``."""

    key = "tier"

    @staticmethod
    def fold(value: str) -> str:
        """``value`` as compared: see :func:`~supportflow.model.tier_key`."""
        return tier_key(value)

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
        """``tier=vip`` for a VIP customer, else ``None``."""
        return ((), ("tier=vip",)) if ctx.ticket.customer.is_vip else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"vip": True}``."""
        return {"vip": True}


_TICKET_ATTRS = ("kind", "status", "channel", "priority", "group", "assignee", "impact", "urgency")
# What a stored customer keeps (its attrs fields) and ``is_vip``: any other attribute name
# would read the object's internals (``customer.__class__``), not data.
_CUSTOMER_ATTRS = (*(field.name for field in attrs.fields(Customer)), "is_vip")


def _field_name(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    non_empty(instance, attribute, value)
    assert isinstance(value, str)
    if value.startswith("customer.") and value.removeprefix("customer.") not in _CUSTOMER_ATTRS:
        expected = "customer.<" + " | ".join(_CUSTOMER_ATTRS) + ">"
        raise ValidationError("name", value, expected)


@attrs.frozen
class FieldEquals(Condition):
    """A field equals ``value``: ``customer.<attr>`` (a field of :class:`Customer`, or
    ``is_vip``; tiers compare without regard to case), a ticket attribute (``kind``, ``status``,
    ``channel``, ``priority``, ``category`` as earlier rules left it, ...), else the custom
    field ``name`` (``ticket.fields[name]``; a ``fields.`` prefix is allowed).

    >>> FieldEquals("customer.language", "zh").to_dict()
    {'field': {'name': 'customer.language', 'equals': 'zh'}}
    """

    name: str = attrs.field(validator=_field_name)
    value: t.Any

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """``<name>=<value>`` when the field equals ``value``; ``None`` otherwise, and when the
        ticket has no such field."""
        ticket, name, expected, missing = ctx.ticket, self.name, self.value, object()
        if name.startswith("customer."):
            actual = getattr(ticket.customer, name.removeprefix("customer."))
            if name == "customer.tier" and isinstance(expected, str):
                # Tiers compare alike everywhere: ``"VIP"`` is ``"vip"``.
                actual, expected = tier_key(actual), tier_key(expected)
        elif name == "category":
            actual = ctx.category
        elif name in _TICKET_ATTRS:
            actual = getattr(ticket, name)
        else:
            actual = ticket.fields.get(name.removeprefix("fields."), missing)
        return ((), (f"{name}={self.value}",)) if actual == expected else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"field": {"name": ..., "equals": ...}}``."""
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
        """The evidence of every condition merged; ``None`` if any of them does not match."""
        found = [condition.evaluate(ctx) for condition in self.conditions]
        return None if None in found else _merge(found)

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"all": [...]}``."""
        return {"all": [condition.to_dict() for condition in self.conditions]}


@attrs.frozen(init=False)
class Any(Condition):
    """At least one of ``conditions`` matches; evidence comes from every one that does."""

    conditions: tuple[Condition, ...]

    def __init__(self, *conditions: Condition) -> None:
        self.__attrs_init__(_conditions(conditions, "any"))

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """The evidence of the conditions that match, merged; ``None`` when none does."""
        found = [e for e in (condition.evaluate(ctx) for condition in self.conditions) if e]
        return _merge(found) if found else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"any": [...]}``."""
        return {"any": [condition.to_dict() for condition in self.conditions]}


def is_condition(instance: object, attribute: attrs.Attribute[t.Any], value: object) -> None:
    """attrs validator: ``value`` must be a :class:`Condition` (an abstract class, which
    ``attrs.validators.instance_of`` cannot be typed with)."""
    if not isinstance(value, Condition):
        raise ValidationError(attribute.name, value, "a Condition such as Keywords([...])")


@attrs.frozen
class Not(Condition):
    """``condition`` does not match. ``Not(TierIs("internal"))``."""

    condition: Condition = attrs.field(validator=is_condition)

    def evaluate(self, ctx: MatchContext) -> Evidence | None:
        """Empty evidence when ``condition`` does not match, else ``None``."""
        return ((), ()) if self.condition.evaluate(ctx) is None else None

    def to_dict(self) -> dict[str, t.Any]:
        """The condition as ``{"not": {...}}``."""
        return {"not": self.condition.to_dict()}


def _merge(found: Iterable[Evidence | None]) -> Evidence:
    words: dict[str, None] = {}
    fields: dict[str, None] = {}
    for evidence in found:
        if evidence:
            words.update(dict.fromkeys(evidence[0]))
            fields.update(dict.fromkeys(evidence[1]))
    return tuple(words), tuple(fields)


def walk(condition: Condition) -> Iterable[Condition]:
    """``condition`` and every condition nested in it."""
    yield condition
    if isinstance(condition, (All, Any)):
        for child in condition.conditions:
            yield from walk(child)
    elif isinstance(condition, Not):
        yield from walk(condition.condition)


def required_words(condition: Condition) -> frozenset[str] | None:
    """Normalised words of which at least one must be found for ``condition`` to match, or None
    if it can match without any. Lets the classifier skip rules whose keywords are absent."""
    if isinstance(condition, Keywords):
        return frozenset(condition.index)
    if isinstance(condition, All):
        options = [r for r in map(required_words, condition.conditions) if r is not None]
        return min(options, key=len) if options else None
    if isinstance(condition, Any):
        union: set[str] = set()
        for child in condition.conditions:
            required = required_words(child)
            if required is None:
                return None
            union |= required
        return frozenset(union)
    return None


class RuleIndex:
    """The keywords of a list of conditions, and which of them can only hold if one of their
    keywords is found. Built once, so that classifying evaluates only the rules that may match
    (those with a keyword found, and those that need none, such as ``IsVip()``)."""

    __slots__ = ("always", "by_word", "fields", "words")

    def __init__(self, conditions: Iterable[Condition]) -> None:
        words: set[str] = set()
        fields: dict[str, None] = {}
        by_word: dict[str, list[int]] = {}
        always: list[int] = []
        for index, condition in enumerate(conditions):
            for part in walk(condition):
                if isinstance(part, Keywords):
                    words.update(part.index)
                    fields.update(dict.fromkeys(part.fields))
            required = required_words(condition)
            if required is None:
                always.append(index)
            for word in required or ():
                by_word.setdefault(word, []).append(index)
        self.words = frozenset(words)
        self.fields = tuple(fields)  # the text fields keyword conditions read, in first-use order
        self.always = frozenset(always)
        self.by_word = {word: tuple(indexes) for word, indexes in by_word.items()}

    def candidates(self, found: Iterable[str]) -> list[int]:
        """The positions of the conditions that may hold, given the normalised words found,
        in order (whatever order the words were found in)."""
        candidates = set(self.always)
        for word in found:
            candidates.update(self.by_word.get(word, ()))
        return sorted(candidates)
