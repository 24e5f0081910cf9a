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

import abc
import typing as t
from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

from supportflow._conditions import (
    DEFAULT_FIELDS,
    SENSITIVE_FIELDS,
    All,
    Any,
    CategoryIs,
    ChannelIs,
    Condition,
    FieldEquals,
    HasTag,
    IsVip,
    Keywords,
    MatchContext,
    Not,
    Regex,
    RuleIndex,
    TierIs,
    check_texts,
    is_condition,
    non_empty,
)
from supportflow._conditions import (
    Evidence as Evidence,  # re-exported: what Condition.evaluate returns
)
from supportflow._rules_document import (
    Vocabulary,
    load_json,
    parse_document,
    parse_matrix,
    then_document,
)
from supportflow._textmatch import Automaton, find_naive, normalize
from supportflow.errors import ValidationError
from supportflow.model import Priority, Ticket, _is_flag, _is_text, coerce_enum

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
        if not isinstance(table, Mapping):
            raise ValidationError("matrix", table, "a mapping of (impact, urgency) to priority")
        parsed: dict[tuple[str, str], Priority] = {}
        for key, value in table.items():
            if not isinstance(key, tuple) or len(key) != 2:
                raise ValidationError("matrix", key, "an (impact, urgency) pair")
            impact, urgency = _level(key[0], "matrix.impact"), _level(key[1], "matrix.urgency")
            if (impact, urgency) in parsed:  # "High" and "high" are one level: which one wins?
                raise ValidationError(f"matrix.{impact}.{urgency}", key, "each pair once")
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
        table = parse_matrix(doc, path)
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

# ------------------------------------------------------------------------------------- actions


class _Draft:
    """The classification being built while the rules run."""

    def __init__(self, ctx: MatchContext, kept: frozenset[str] = frozenset()) -> None:
        self.ctx = ctx
        self.kept = kept  # ticket attributes a person set: rules do not replace them
        self.impact: str | None = None
        self.urgency: str | None = None
        self.priority_steps: list[tuple[str, Priority, str]] = []  # (raise|cap, to, rule)
        self.added_tags: dict[str, None] = {}
        self.group: str | None = None
        self.assignee: str | None = None
        self.flag = False
        self.reasons: list[Reason] = []


class Action(abc.ABC):
    """Something a matching rule does. ``apply`` returns the detail for the :class:`Reason`."""

    __slots__ = ()
    kind: t.ClassVar[str]

    @abc.abstractmethod
    def apply(self, draft: _Draft, rule: str) -> str:
        """Apply the action to the classification being drafted."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, t.Any]:
        """The action as entries of a rule's ``then`` object."""


@attrs.frozen
class SetCategory(Action):
    """Set the category; a later rule's category replaces an earlier one's."""

    name: str = attrs.field(validator=non_empty)
    kind = "set_category"

    def apply(self, draft: _Draft, rule: str) -> str:
        """Set the drafted category, unless the ticket keeps its own (the detail then says so)."""
        if "category" in draft.kept:
            return f"{self.name} (the ticket keeps {draft.ctx.category})"
        draft.ctx.category = self.name
        return self.name

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"category": name}``."""
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
        """Draft the impact and/or urgency, except one the ticket keeps; the detail names each."""
        done = []
        for name, value in self.to_dict().items():
            if name in draft.kept:
                done.append(f"{name}={value} (the ticket keeps {getattr(draft.ctx.ticket, name)})")
            else:
                setattr(draft, name, value)
                done.append(f"{name}={value}")
        return " ".join(done)

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"impact": ..., "urgency": ...}``, with only the levels given."""
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
        """Queue a raise to at least ``to``, applied after the priority matrix."""
        draft.priority_steps.append(("raise", self.to, rule))
        return f"at least {self.to.value}"

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"raise_priority": to}``."""
        return {"raise_priority": self.to.value}


@attrs.frozen
class CapPriority(Action):
    """Priority at most ``to``; never below a priority an agent set explicitly."""

    to: Priority = attrs.field(converter=_to_priority)
    kind = "cap_priority"

    def apply(self, draft: _Draft, rule: str) -> str:
        """Queue a cap at ``to``, applied after the priority matrix."""
        draft.priority_steps.append(("cap", self.to, rule))
        return f"at most {self.to.value}"

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"cap_priority": to}``."""
        return {"cap_priority": self.to.value}


@attrs.frozen(init=False)
class AddTags(Action):
    """Add tags. ``AddTags("refund", "vip")``."""

    tags: tuple[str, ...]
    kind = "add_tags"

    def __init__(self, *tags: str) -> None:
        self.__attrs_init__(check_texts(tags, "tags", "tag"))

    def apply(self, draft: _Draft, rule: str) -> str:
        """Add the tags to the draft, where later rules' :class:`HasTag` sees them."""
        draft.added_tags.update(dict.fromkeys(self.tags))
        draft.ctx.tags.update(self.tags)
        return ", ".join(self.tags)

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"tags": [...]}``."""
        return {"tags": list(self.tags)}


@attrs.frozen
class RouteTo(Action):
    """Put the ticket in a group's queue."""

    group: str = attrs.field(validator=non_empty)
    kind = "route_to"

    def apply(self, draft: _Draft, rule: str) -> str:
        """Route the draft to ``group``; a later rule's group replaces it."""
        draft.group = self.group
        return self.group

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"route_to": group}``."""
        return {"route_to": self.group}


@attrs.frozen
class AssignTo(Action):
    """Assign the ticket to an agent."""

    assignee: str = attrs.field(validator=non_empty)
    kind = "assign_to"

    def apply(self, draft: _Draft, rule: str) -> str:
        """Assign the draft to ``assignee``; a later rule's assignee replaces it."""
        draft.assignee = self.assignee
        return self.assignee

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"assign_to": assignee}``."""
        return {"assign_to": self.assignee}


@attrs.frozen
class FlagTeamLead(Action):
    """Ask the team lead to look at the ticket; ``reason`` is shown to them."""

    reason: str = attrs.field(default="", validator=_is_text)
    kind = "flag_team_lead"

    def apply(self, draft: _Draft, rule: str) -> str:
        """Flag the draft for the team lead; the detail is ``reason``."""
        draft.flag = True
        return self.reason

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"flag_team_lead": reason}``, or ``True`` without a reason."""
        return {"flag_team_lead": self.reason or True}


@attrs.frozen
class SetFingerprint(Action):
    """Give the ticket a mass-incident key, e.g. ``"outage-0311-vpn"`` (see :func:`fingerprint`)."""

    key: str = attrs.field(validator=non_empty)
    kind = "set_fingerprint"

    def apply(self, draft: _Draft, rule: str) -> str:
        """Change nothing in the draft: the key is the detail, which :func:`fingerprint` reads."""
        return self.key

    def to_dict(self) -> dict[str, t.Any]:
        """The action as ``{"fingerprint": key}``."""
        return {"fingerprint": self.key}


def _actions(actions: Iterable[Action]) -> tuple[Action, ...]:
    if isinstance(actions, Action):
        actions = (actions,)
    elif not isinstance(actions, Iterable):
        raise ValidationError("then", actions, "an Action or a list of Actions")
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

    name: str = attrs.field(validator=non_empty)
    when: Condition = attrs.field(validator=is_condition)
    then: tuple[Action, ...] = attrs.field(default=(), converter=_actions)
    stop: bool = attrs.field(default=False, validator=_is_flag)

    def to_dict(self) -> dict[str, t.Any]:
        """The rule in the document schema; ``then`` is a list only if one object can't say it
        (an action twice, or both a raise and a cap, whose order matters)."""
        then = then_document(self.then)
        stop = {"stop": True} if self.stop else {}
        return {"name": self.name, "when": self.when.to_dict(), "then": then} | stop


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
        "_automaton",
        "_fields",
        "_index",
        "_sensitive",
        "_sensitive_list",
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
        if not isinstance(rules, Iterable):
            raise ValidationError("rules", rules, "a list of Rule objects")
        if sensitive_words is not None and not isinstance(sensitive_words, Iterable):
            raise ValidationError("sensitive_words", sensitive_words, "a list of words, or None")
        self.rules, self.matrix = tuple(rules), matrix
        for index, rule in enumerate(self.rules):
            self._check(index, rule)
        self._index = RuleIndex(rule.when for rule in self.rules)
        words, fields = set(self._index.words), dict.fromkeys(self._index.fields)
        self._warn = sensitive_words is not None
        checked = check_texts(sensitive_words, "sensitive_words", "word") if sensitive_words else ()
        self._sensitive = tuple((word, normalize(word)) for word in checked)
        self._sensitive_set = frozenset(normal for _, normal in self._sensitive)
        self._sensitive_list = tuple(sorted(self._sensitive_set))
        if self._sensitive:
            words.update(self._sensitive_set)
            fields.update(dict.fromkeys(SENSITIVE_FIELDS))
        self._automaton = Automaton(words)
        self._fields = tuple(fields)

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

    def finds_sensitive(self, text: str) -> bool:
        """Whether ``text`` holds one of the sensitive words (as early warning matches them:
        normalised, on word boundaries).

        >>> Classifier([], sensitive_words=["lawyer"]).finds_sensitive("My LAWYER will call")
        True
        """
        if not self._sensitive_list or not text:
            return False
        normal = normalize(text)
        # A substring test per word runs in C; the few words present (most texts have none)
        # are then checked for word boundaries, as the automaton would.
        present = [word for word in self._sensitive_list if word in normal]
        return bool(present) and bool(find_naive(present, normal))

    def classify(self, ticket: Ticket, *, keep: Collection[str] = ()) -> Classification:
        """Run the rules, the matrix and the early warning on ``ticket``.

        ``keep`` names attributes a person set (``category``, ``impact``, ``urgency``): where
        the ticket has a value, rules and the matrix see that value and a rule that would
        replace it only says so in its reason.
        """
        kept: frozenset[str] = frozenset()
        if keep:
            if unknown := set(keep) - {"category", "impact", "urgency"}:
                raise ValidationError("keep", sorted(unknown), "category, impact or urgency")
            kept = frozenset(name for name in keep if getattr(ticket, name) is not None)
        ctx = MatchContext(ticket, self._automaton, self._fields)
        draft = _Draft(ctx, kept)
        found: set[str] = set().union(*(ctx.hits(field) for field in self._fields))
        for index in self._index.candidates(found):
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
        where = {f: hit for f in SENSITIVE_FIELDS if (hit := ctx.hits(f) & self._sensitive_set)}
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
        rules, words, matrix = parse_document(doc, _VOCABULARY, DEFAULT_SENSITIVE_WORDS)
        return cls(
            rules,
            matrix=_DEFAULT_MATRIX if matrix is None else PriorityMatrix.from_dict(matrix),
            sensitive_words=words,
        )

    @classmethod
    def from_json(cls, text: str) -> Classifier:
        """:meth:`from_dict` on a JSON text."""
        return cls.from_dict(t.cast(Mapping[str, t.Any], load_json(text)))

    def __repr__(self) -> str:
        return f"<Classifier {len(self.rules)} rules, {len(self._automaton.words)} words>"


_VOCABULARY: Vocabulary[Rule, Action] = Vocabulary(
    rule=Rule,
    simple={
        "category": SetCategory,
        "raise_priority": RaisePriority,
        "cap_priority": CapPriority,
        "route_to": RouteTo,
        "assign_to": AssignTo,
        "fingerprint": SetFingerprint,
    },
    tags=AddTags,
    flag_team_lead=FlagTeamLead,
    impact_urgency=SetImpactUrgency,
)
