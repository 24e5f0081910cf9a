"""The rules document: the JSON form of a classifier's rules, read with path-named errors.

Private: :meth:`supportflow.classify.Classifier.from_dict` and ``from_json`` are the way in, and
``docs/classification.md`` describes the schema. This module parses conditions itself (they
live in :mod:`supportflow._conditions`); rules and actions are built through the
:class:`Vocabulary` that :mod:`supportflow.classify` hands in, so the dependency runs one way
only: classify → this module → conditions, model, errors.
"""

from __future__ import annotations

import json
import typing as t
from collections.abc import Callable, Mapping, Sequence

import attrs

from supportflow._conditions import (
    All,
    Any,
    CategoryIs,
    ChannelIs,
    Condition,
    FieldEquals,
    HasTag,
    IsVip,
    Keywords,
    Not,
    Regex,
    TierIs,
    check_fields,
    check_text,
)
from supportflow.errors import ValidationError
from supportflow.model import Priority, coerce_enum

#: The actions whose order matters: one ``then`` object may not hold both.
ORDERED: t.Final = frozenset({"raise_priority", "cap_priority"})
#: Keys one action writes together: an object holding both is read back as that one action.
_TOGETHER: t.Final = frozenset({"impact", "urgency"})

_T = t.TypeVar("_T")
_R = t.TypeVar("_R")  # a rule
_A = t.TypeVar("_A")  # an action


@attrs.frozen
class Vocabulary(t.Generic[_R, _A]):
    """What a document's rules and actions become: the classes of :mod:`supportflow.classify`.

    ``simple`` maps the action keys that take one value (``category``, ``route_to``, ...) to
    their action class.
    """

    rule: Callable[[str, Condition, list[_A], bool], _R]
    simple: Mapping[str, Callable[[t.Any], _A]]
    tags: Callable[..., _A]
    flag_team_lead: Callable[[str], _A]
    impact_urgency: Callable[[str | None, str | None], _A]

    @property
    def action_keys(self) -> tuple[str, ...]:
        return ("impact", "urgency", "tags", "flag_team_lead", *self.simple)


class _Writable(t.Protocol):
    def to_dict(self) -> dict[str, t.Any]: ...


def then_document(actions: Sequence[_Writable]) -> dict[str, t.Any] | list[dict[str, t.Any]]:
    """A rule's ``then``: one object, or a list of objects when one object can't say it (an
    action twice, or both a raise and a cap, whose order matters; an impact and an urgency set
    by two actions, which one object would read back as one)."""
    then: dict[str, t.Any] = {}
    for action in actions:
        entries = action.to_dict()
        keys = entries.keys() | _TOGETHER if entries.keys() & _TOGETHER else entries.keys()
        if then.keys() & keys or (then.keys() | keys) >= ORDERED:
            return [action.to_dict() for action in actions]
        then.update(entries)
    return then


def load_json(text: str) -> object:
    """``json.loads``, with a ``ValidationError("json", ...)`` naming the line and column."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise ValidationError("json", text, "a JSON text (str)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        expected = f"valid JSON ({error.msg} at {where})"
        raise ValidationError("json", text[:60], expected) from None
    # Also refused by ``json``: bytes that are not UTF-8 (UnicodeDecodeError), a number too
    # long to convert (ValueError) and nesting deeper than the interpreter's stack.
    except (ValueError, RecursionError) as error:
        raise ValidationError("json", text[:60], f"valid JSON ({error})") from None


def parse_document(
    doc: object, vocabulary: Vocabulary[_R, _A], default_words: Sequence[str]
) -> tuple[list[_R], Sequence[str] | None, object]:
    """The rules, the sensitive words (``None`` for none) and the matrix entry (``None`` when
    absent) of a classifier document."""
    if not isinstance(doc, Mapping):
        raise ValidationError("document", doc, 'an object {"rules": [...]}')
    known(doc, "", ("rules", "sensitive_words", "matrix"))
    rules = doc.get("rules")
    if not isinstance(rules, list):
        raise ValidationError("rules", rules, "a list of rules")
    words = doc.get("sensitive_words", default_words)
    if words is not None and not isinstance(words, (list, tuple)):
        raise ValidationError("sensitive_words", words, "a list of words, or null for none")
    parsed = [parse_rule(rule, f"rules[{index}]", vocabulary) for index, rule in enumerate(rules)]
    return parsed, words, doc.get("matrix")


def parse_matrix(doc: object, path: str) -> dict[tuple[str, str], str]:
    """The ``(impact, urgency) → priority`` table of a ``{impact: {urgency: priority}}`` entry
    (its completeness is checked by ``PriorityMatrix``)."""
    if not isinstance(doc, Mapping) or not doc:
        raise ValidationError(path, doc, "an object {impact: {urgency: priority}}")
    table: dict[tuple[str, str], str] = {}
    for impact, row in doc.items():
        if not isinstance(row, Mapping) or not row:
            raise ValidationError(f"{path}.{impact}", row, "an object {urgency: priority}")
        for urgency, priority in row.items():
            coerce_enum(Priority, priority, f"{path}.{impact}.{urgency}")
            table[impact, urgency] = priority
    return table


def known(doc: Mapping[str, t.Any], path: str, keys: Sequence[str]) -> None:
    """Refuse a key of ``doc`` that is not one of ``keys``."""
    for key in doc:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            raise ValidationError(where, doc[key], f"no such key; known keys: {', '.join(keys)}")


def _build(path: str, factory: Callable[..., _T], *args: t.Any) -> _T:
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


_ONE_OF: dict[str, Callable[..., Condition]] = {
    "tier": TierIs,
    "category": CategoryIs,
    "tag": HasTag,
}
_CONDITION_KEYS = ("keywords", "regex", "channel", "vip", "field", "all", "any", "not", *_ONE_OF)


def parse_condition(doc: object, path: str) -> Condition:
    """One condition object, such as ``{"keywords": [...], "fields": [...]}``."""
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
        fields = (_build(at, check_fields, _list(doc["fields"], at, "fields")),)
    if key in ("all", "any"):
        children = [
            parse_condition(c, f"{where}[{i}]")
            for i, c in enumerate(_list(value, where, "conditions"))
        ]
        return _build(where, All if key == "all" else Any, *children)
    if key == "not":
        return Not(parse_condition(value, where))
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


def parse_then(doc: object, path: str, vocabulary: Vocabulary[_R, _A]) -> list[_A]:
    """A rule's actions: one object of actions, or a list of them run in order."""
    if isinstance(doc, list):
        return [
            action
            for i, item in enumerate(doc)
            for action in parse_then(item, f"{path}[{i}]", vocabulary)
        ]
    if not isinstance(doc, Mapping):
        raise ValidationError(path, doc, "an object of actions, or a list of them")
    known(doc, path, vocabulary.action_keys)
    actions: list[_A] = []
    if doc.keys() >= ORDERED:  # object key order is lost by some stores (e.g. jsonb)
        expected = "a list of action objects when a rule both raises and caps, to fix the order"
        raise ValidationError(f"{path}.cap_priority", doc["cap_priority"], expected)
    levels_done = False  # impact and urgency make one action
    for key, value in doc.items():
        where = f"{path}.{key}"
        if key in vocabulary.simple:
            actions.append(_build(where, vocabulary.simple[key], value))
        elif key == "tags":
            actions.append(_build(where, vocabulary.tags, *_list(value, where, "tags")))
        elif key == "flag_team_lead":
            if not isinstance(value, (bool, str)):
                raise ValidationError(where, value, "true, false or a reason for the team lead")
            if value:
                actions.append(vocabulary.flag_team_lead(value if isinstance(value, str) else ""))
        elif not levels_done:
            levels_done = True
            try:
                actions.append(vocabulary.impact_urgency(doc.get("impact"), doc.get("urgency")))
            except ValidationError as error:
                raise ValidationError(
                    f"{path}.{error.field}", error.value, error.expected
                ) from None
    return actions


def parse_rule(doc: object, path: str, vocabulary: Vocabulary[_R, _A]) -> _R:
    """One rule object: ``{"name", "when", "then", "stop"}``."""
    if not isinstance(doc, Mapping):
        raise ValidationError(path, doc, "a rule object with name, when and then")
    known(doc, path, ("name", "when", "then", "stop"))
    for key in ("name", "when"):
        if key not in doc:
            raise ValidationError(f"{path}.{key}", None, f"a {key} (it is required)")
    stop = doc.get("stop", False)
    if not isinstance(stop, bool):
        raise ValidationError(f"{path}.stop", stop, "true or false")
    name = _build(f"{path}.name", check_text, doc["name"], "name")
    when = parse_condition(doc["when"], f"{path}.when")
    then = parse_then(doc.get("then", {}), f"{path}.then", vocabulary)
    return vocabulary.rule(name, when, then, stop)
