"""Reply scripts: the standard parts of a support reply, per language, filled from the ticket.

A desk keeps its greeting, holding line ("sorry to keep you waiting"), resolution and closing
as templates per ``(name, language)``. English (``en``) and Chinese (``zh``) are built in;
desks add languages or replace wording as plain data. Rendering picks the customer's language
and fails loudly (``ValidationError``) when a field has no value, so a reply never goes out
as "Dear ,".

>>> from supportflow.model import Customer, Ticket
>>> from datetime import datetime, timezone
>>> at = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
>>> ticket = Ticket(id="t-1", number=1042, subject="Refund", description="...",
...                 customer=Customer("c-1", name="王芳", language="zh"), channel="email",
...                 status="open", created_at=at, updated_at=at)
>>> print(ReplyScripts().render("greeting", ticket))
王芳，您好！
>>> print(ReplyScripts().render("greeting", ticket, language="en"))
Hello 王芳,
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from supportflow.errors import ValidationError
from supportflow.model import Ticket

__all__ = ["BUILTIN_TEMPLATES", "DEFAULT_PARTS", "MissingTemplateField", "ReplyScripts"]

BUILTIN_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "en": {
        "greeting": "Hello {customer_name},",
        "holding": (
            "Sorry to keep you waiting. We are still working on ticket #{ticket_number} "
            "({subject}) and will update you as soon as we have news."
        ),
        "resolution": "Good news: ticket #{ticket_number} ({subject}) is resolved. {resolution}",
        "closing": (
            "If anything else comes up, just reply to this message.\n\nBest regards,\n{agent_name}"
        ),
    },
    "zh": {
        "greeting": "{customer_name}，您好！",
        "holding": (
            "抱歉让您久等了。我们仍在处理您的工单 #{ticket_number}（{subject}），"
            "一有进展会第一时间通知您。"
        ),
        "resolution": "您的工单 #{ticket_number}（{subject}）已处理完毕。{resolution}",
        "closing": "如还有其他问题，直接回复本邮件即可。\n\n祝好！\n{agent_name}",
    },
}

DEFAULT_PARTS = ("greeting", "holding", "closing")


class MissingTemplateField(ValidationError):
    """A template needs a field that neither the ticket nor the extras provide."""

    def __init__(self, template: str, language: str, field: str) -> None:
        self.template = template
        self.language = language
        super().__init__(
            field,
            None,
            f"a value for {{{field}}} in template {template!r} (language {language!r}); "
            f"pass {field}=... to render()",
        )


class _Missing(LookupError):
    pass


class _StrictFormatter(string.Formatter):
    """Looks fields up by name only; an absent, ``None`` or empty value is an error."""

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        value = kwargs.get(key) if isinstance(key, str) else None
        if value is None or value == "":
            raise _Missing(str(key))
        return value


_FORMATTER = _StrictFormatter()


def _field_names(template: str) -> Iterator[str]:
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is not None:
            yield field
        if spec and "{" in spec:
            yield from _field_names(spec)


def _norm_language(language: str) -> str:
    return language.strip().lower().replace("_", "-")


def _check_template(name: str, language: str, text: Any) -> str:
    where = f"templates[{language!r}][{name!r}]"
    if not isinstance(text, str):
        raise ValidationError(where, text, "a template string")
    try:
        fields = list(_field_names(text))
    except ValueError as exc:  # unbalanced braces
        raise ValidationError(where, text, f"a valid template ({exc})") from None
    for field in fields:
        # Names only: attribute or index access ({ticket.__class__}) would let template
        # data reach into Python objects.
        if not field.isidentifier():
            raise ValidationError(
                where, text, f"fields written as {{name}}; {{{field}}} is not a plain name"
            )
    return text


class ReplyScripts:
    """Reply templates per ``(name, language)``.

    ``ReplyScripts()`` holds the built-in English and Chinese scripts. Load your own with
    :meth:`from_dict`, or add and replace some with :meth:`with_templates`; both take
    ``{language: {name: template}}``. Templates use ``str.format`` fields by name:
    ``{customer_name}``, ``{customer_id}``, ``{ticket_number}``, ``{ticket_id}``,
    ``{subject}``, ``{status}``, ``{priority}``, ``{category}``, ``{group}``, ``{assignee}``,
    ``{resolution}``, the ticket's custom fields, and whatever is passed as keyword
    arguments (``agent_name`` always comes from there).

    >>> scripts = ReplyScripts().with_templates({"ja": {"greeting": "{customer_name}様"}})
    >>> sorted(scripts.languages)
    ['en', 'ja', 'zh']
    """

    def __init__(
        self,
        templates: Mapping[str, Mapping[str, str]] | None = None,
        *,
        default_language: str = "en",
    ) -> None:
        data = BUILTIN_TEMPLATES if templates is None else templates
        self._templates: dict[tuple[str, str], str] = {}
        if not isinstance(data, Mapping):
            raise ValidationError("templates", data, "a mapping {language: {name: template}}")
        for language, named in data.items():
            if not isinstance(language, str) or not language.strip():
                raise ValidationError("templates", language, "language codes such as 'en'")
            if not isinstance(named, Mapping):
                raise ValidationError(f"templates[{language!r}]", named, "a mapping {name: text}")
            lang = _norm_language(language)
            for name, text in named.items():
                if not isinstance(name, str) or not name.strip():
                    raise ValidationError(f"templates[{language!r}]", name, "template names")
                self._templates[(name, lang)] = _check_template(name, lang, text)
        if not isinstance(default_language, str) or not default_language.strip():
            raise ValidationError("default_language", default_language, "a language code like 'en'")
        self.default_language = _norm_language(default_language)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Mapping[str, str]], *, default_language: str = "en"
    ) -> ReplyScripts:
        """Scripts made of ``data`` alone (no built-ins), e.g. loaded from JSON or YAML.

        >>> scripts = ReplyScripts.from_dict({"en": {"greeting": "Hi {customer_name}!"}})
        >>> scripts.names
        ('greeting',)
        """
        return cls(data, default_language=default_language)

    def with_templates(
        self,
        data: Mapping[str, Mapping[str, str]],
        *,
        default_language: str | None = None,
    ) -> ReplyScripts:
        """A copy with ``data``'s templates added, replacing those with the same name+language.

        >>> scripts = ReplyScripts().with_templates({"en": {"greeting": "Hi {customer_name}!"}})
        >>> scripts.template("greeting", "en")
        'Hi {customer_name}!'
        """
        if not isinstance(data, Mapping):
            raise ValidationError("templates", data, "a mapping {language: {name: template}}")
        merged = self.to_dict()
        for language, named in data.items():
            if not isinstance(language, str) or not language.strip():
                raise ValidationError("templates", language, "language codes such as 'en'")
            if not isinstance(named, Mapping):
                raise ValidationError(f"templates[{language!r}]", named, "a mapping {name: text}")
            merged.setdefault(_norm_language(language), {}).update(named)
        return type(self)(merged, default_language=default_language or self.default_language)

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The templates as ``{language: {name: template}}``, ready for JSON."""
        result: dict[str, dict[str, str]] = {}
        for (name, language), text in self._templates.items():
            result.setdefault(language, {})[name] = text
        return result

    @property
    def languages(self) -> tuple[str, ...]:
        """The language codes that have at least one template, sorted."""
        return tuple(sorted({language for _, language in self._templates}))

    @property
    def names(self) -> tuple[str, ...]:
        """The template names (of every language), sorted."""
        return tuple(sorted({name for name, _ in self._templates}))

    def template(self, name: str, language: str) -> str:
        """The raw template; ``ValidationError`` if there is none for this name and language."""
        try:
            return self._templates[(name, _norm_language(language))]
        except KeyError:
            available = ", ".join(f"{n}/{lang}" for n, lang in sorted(self._templates)) or "none"
            raise ValidationError("template", f"{name}/{language}", f"one of {available}") from None

    def language_for(
        self, ticket: Ticket, names: Sequence[str], language: str | None = None
    ) -> str:
        """The language all ``names`` will be rendered in.

        Tried in order: ``language`` if given, else the customer's language, each as given
        (``zh-cn``) and as its primary subtag (``zh``); then the default language. The first
        one that has every template in ``names`` wins, so a reply never mixes languages.
        """
        wanted = language if language is not None else ticket.customer.language
        candidates: list[str] = []
        if wanted:
            norm = _norm_language(wanted)
            candidates += [norm, norm.split("-", 1)[0]]
        candidates.append(self.default_language)
        for candidate in dict.fromkeys(candidates):
            if all((name, candidate) in self._templates for name in names):
                return candidate
        missing = [n for n in names if (n, self.default_language) not in self._templates]
        raise ValidationError(
            "template",
            ", ".join(missing or names),
            f"templates in one of the languages {', '.join(dict.fromkeys(candidates))} "
            f"(have: {', '.join(self.languages) or 'none'})",
        )

    @staticmethod
    def fields(ticket: Ticket, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The values templates can use: ticket custom fields < ticket attributes < extras."""
        # agent_name comes from the caller only: a custom field of that name (which a web
        # form may fill) must neither sign a reply nor hide a missing agent_name.
        values: dict[str, Any] = {
            key: value
            for key, value in ticket.fields.items()
            if str(key).isidentifier() and key != "agent_name"
        }
        values.update(
            customer_name=ticket.customer.name,
            customer_id=ticket.customer.id,
            ticket_number=ticket.number,
            ticket_id=ticket.id,
            subject=ticket.subject,
            status=ticket.status,
            priority=ticket.priority.value,
            category=ticket.category,
            group=ticket.group,
            assignee=ticket.assignee,
            resolution=ticket.resolution,
        )
        values.update(extra or {})
        return values

    def render(self, name: str, ticket: Ticket, language: str | None = None, **extra: Any) -> str:
        """Fill template ``name`` for ``ticket`` in the customer's language (see
        :meth:`language_for`).

        A field with no value (absent, ``None`` or ``""``) raises
        :class:`MissingTemplateField`, a ``ValidationError`` naming template, language and
        field.
        """
        chosen = self.language_for(ticket, [name], language)
        return self._render(name, chosen, self.fields(ticket, extra))

    def compose(
        self,
        ticket: Ticket,
        parts: Sequence[str] = DEFAULT_PARTS,
        language: str | None = None,
        *,
        separator: str = "\n\n",
        **extra: Any,
    ) -> str:
        """Render several parts in one language and join them.

        >>> from supportflow.model import Customer, Ticket
        >>> from datetime import datetime, timezone
        >>> at = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
        >>> ticket = Ticket(id="t-1", number=7, subject="Login", description="...",
        ...                 customer=Customer("c-1", name="Ann"), channel="chat",
        ...                 status="open", created_at=at, updated_at=at)
        >>> print(ReplyScripts().compose(ticket, ["greeting", "holding"]))
        Hello Ann,
        <BLANKLINE>
        Sorry to keep you waiting. We are still working on ticket #7 (Login) and will update you as soon as we have news.
        """  # noqa: E501
        if isinstance(parts, str):
            raise ValidationError("parts", parts, "a list of template names, not one string")
        chosen = self.language_for(ticket, parts, language)
        values = self.fields(ticket, extra)
        return separator.join(self._render(name, chosen, values) for name in parts)

    def _render(self, name: str, language: str, values: Mapping[str, Any]) -> str:
        text = self._templates[(name, language)]
        try:
            return _FORMATTER.vformat(text, (), values)
        except _Missing as missing:
            raise MissingTemplateField(name, language, str(missing)) from None
        except (ValueError, TypeError) as exc:  # a format spec that does not fit the value
            raise ValidationError(
                f"templates[{language!r}][{name!r}]", text, f"a template that renders ({exc})"
            ) from None
