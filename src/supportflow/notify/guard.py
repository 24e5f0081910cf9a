"""Reply guard: stop a public reply that links off-site, leaks an internal note or says
something the desk never says.

The guard checks a reply body against a :class:`ReplyPolicy` and reports each problem as a
:class:`Finding` with its position in the body:

* ``link``: an ``http(s)://`` URL, or a bare domain such as ``www.example.org`` or
  ``example.cn/path``, whose host is neither an allowed domain nor a subdomain of one;
* ``internal_note``: a run of at least ``min_note_overlap`` characters (whitespace collapsed)
  copied from one of the ticket's internal messages (``public=False``);
* ``forbidden_term``: a listed term, matched case-insensitively.

Text is compared after NFKC folding and case folding, so full-width ``ｅｖｉｌ．ｃｏｍ`` and
``ＦＲＥＥ`` are caught as ``evil.com`` and ``free``; zero-width characters are ignored.

>>> guard = ReplyGuard(ReplyPolicy(allowed_domains=["example.com"], forbidden_terms=["保证"]))
>>> [f.text for f in guard.scan("See https://help.example.com/a or ｅｖｉｌ．ｉｏ. 保证退款!")]
['ｅｖｉｌ．ｉｏ', '保证']
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Collection, Iterable
from typing import Any, Literal

import attrs

from supportflow.errors import ReplyBlocked, ValidationError
from supportflow.model import Message, Ticket

__all__ = ["Finding", "FindingKind", "ReplyGuard", "ReplyPolicy"]

FindingKind = Literal["link", "internal_note", "forbidden_term"]

# Bare "name.tld" only counts as a link for these top-level domains (or with "www."), so that
# file names such as report.pdf or setup.py in a reply are not taken for links.
_LINK_TLDS = frozenset(
    """
    com net org edu gov mil int info biz name pro mobi asia tel travel jobs
    io co ai app dev me tv cc ly gl gg to fm ws xyz top shop site online store tech cloud
    link club vip live news blog page wiki email help support team world today life
    cn hk tw mo jp kr sg my th vn id ph in au nz uk de fr es it nl be ch at se no dk fi ie
    pt pl cz hu ro gr ru ua by kz br mx ar cl pe ca us za eu tr ae sa il ir eg ng ke pk bd
    """.split()  # noqa: SIM905 - a word list reads better than 120 quoted strings
)
# Whitespace, quotes, CJK punctuation and ideographs end a link: Chinese text often runs
# straight on after a URL ("请访问 https://x.cn/a，谢谢"), and pasted URLs are percent-encoded.
_STOP = r"\s<>\"'`\u3000-\u303f\u3400-\u9fff\uac00-\ud7af\uff00-\uffef"
# The host of a URL may be an international name written in CJK (https://例子.com/,
# https://例子.测试/): a label followed by a dot may hold ideographs, and so may the last label
# when it ends where a host ends. Otherwise CJK text after the host ends the link, as above.
_CJK_HOST_END = r"(?=[/?#:.,;!)\]}\s<>\"'`\u3000-\u303f\uff00-\uffef]|$)"
_URL = re.compile(
    r"https?://(?:[^\s<>\"'`/?#\\.\u3000-\u303f\uff00-\uffef]+\.)*"
    rf"(?:[\u3400-\u9fff\uac00-\ud7af]+{_CJK_HOST_END})?"
    rf"[^{_STOP}]*"
)
_BARE = re.compile(
    r"(?<![a-z0-9@.\-_/:])"
    r"((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59}))"
    r"(?![a-z0-9\-_@])"
    rf"(?::\d{{1,5}})?(?:[/?#][^{_STOP}]*)?"
)
_TRAILING = ".,;:!?]}'\"*_~"
_LATIN_WORD = re.compile(r"[a-z0-9\u00c0-\u024f]")
_HASH_MOD = (1 << 61) - 1
_HASH_BASE = 1_000_003


@attrs.frozen(slots=True)
class Finding:
    """One problem in a reply: ``body[start:end] == text``; ``detail`` says what is wrong."""

    kind: FindingKind
    text: str
    start: int
    end: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.text!r} at {self.start}-{self.end}: {self.detail}"


# -- folding -------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class _Folded:
    """Folded text and, for each of its characters, the span of the original it came from."""

    text: str
    starts: list[int]
    ends: list[int]

    def span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]


def _fold(text: str) -> _Folded:
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and unicodedata.combining(text[j]):
            j += 1  # keep a base character with its accents so NFKC can compose them
        cluster = text[i:j]
        if cluster.isspace():
            if out and out[-1] == " ":
                ends[-1] = j
            else:
                out.append(" ")
                starts.append(i)
                ends.append(j)
        elif unicodedata.category(cluster[0]) != "Cf":  # zero-width and other format chars
            for char in unicodedata.normalize("NFKC", cluster).casefold():
                if char.isspace():
                    char = " "
                out.append(char)
                starts.append(i)
                ends.append(j)
        i = j
    return _Folded("".join(out), starts, ends)


def _fold_text(text: str) -> str:
    return _fold(text).text.strip()


def _host_key(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _domain(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("allowed_domains", value, "domain names such as example.com")
    text = value.strip().lower()
    if "://" in text:
        text = urllib.parse.urlsplit(text).hostname or ""
    text = text.split("/", 1)[0].removeprefix("*.").lstrip(".")
    if not text:
        raise ValidationError("allowed_domains", value, "domain names such as example.com")
    return _host_key(text)


def _domains(values: Collection[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise ValidationError("allowed_domains", values, "a collection of domains, not a string")
    if not isinstance(values, Iterable):
        raise ValidationError("allowed_domains", values, "a collection of domains")
    return frozenset(_domain(value) for value in values)


def _terms(values: Collection[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValidationError("forbidden_terms", values, "a collection of terms, not a string")
    if not isinstance(values, Iterable):
        raise ValidationError("forbidden_terms", values, "a collection of terms")
    terms = tuple(values)  # read once: a generator would be empty the second time
    for value in terms:
        if not isinstance(value, str) or not _fold_text(value):
            raise ValidationError("forbidden_terms", value, "non-blank terms")
    return tuple(dict.fromkeys(terms))


def _roles(values: Collection[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise ValidationError("override_roles", values, "a collection of roles, not a string")
    if not isinstance(values, Iterable):
        raise ValidationError("override_roles", values, "a collection of roles")
    roles = tuple(values)
    for value in roles:
        # A role is its name, or an enum member whose value is the name (RecipientRole).
        if not isinstance(getattr(value, "value", value), str):
            raise ValidationError("override_roles", value, "role names (strings)")
    return frozenset(_role_name(value) for value in roles)


def _role_name(value: Any) -> str:
    return str(getattr(value, "value", value)).strip().lower()


def _positive(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(attribute.name, value, "a positive number of characters")


def _boolean(instance: Any, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ValidationError(attribute.name, value, "True or False")


@attrs.frozen(slots=True)
class ReplyPolicy:
    """What a public reply may contain.

    ``allowed_domains`` also allows their subdomains (``example.com`` allows
    ``help.example.com``). Overrides are allowed for ``override_roles``.

    >>> policy = ReplyPolicy(allowed_domains=["Example.com", "*.shop.cn"])
    >>> sorted(policy.allowed_domains)
    ['example.com', 'shop.cn']
    """

    allowed_domains: frozenset[str] = attrs.field(converter=_domains)
    forbidden_terms: tuple[str, ...] = attrs.field(default=(), converter=_terms)
    check_internal_notes: bool = attrs.field(default=True, validator=_boolean)
    min_note_overlap: int = attrs.field(default=20, validator=_positive)
    override_roles: frozenset[str] = attrs.field(default=("team_lead", "manager"), converter=_roles)

    def allows_host(self, host: str) -> bool:
        """True if ``host`` is an allowed domain or a subdomain of one."""
        key = _host_key(host)
        return any(key == d or key.endswith("." + d) for d in self.allowed_domains)


# -- internal notes: Rabin-Karp over k-character shingles ----------------------------------
def _prefix_hashes(text: str) -> list[int]:
    hashes = [0] * (len(text) + 1)
    for index, char in enumerate(text):
        hashes[index + 1] = (hashes[index] * _HASH_BASE + ord(char)) % _HASH_MOD
    return hashes


def _window(hashes: list[int], start: int, size: int, power: int) -> int:
    return (hashes[start + size] - hashes[start] * power) % _HASH_MOD


def _copied_runs(
    body: str, notes: list[tuple[Message, str]], size: int
) -> list[tuple[int, int, Message]]:
    """Maximal runs of ``body`` (folded) made of ``size``-windows that occur in a note.

    Every window of every note is hashed once; each window of the body is then one dict
    lookup. A match is verified by comparing characters, and while a copied run continues
    along the same note the next window is confirmed by one character comparison, so the
    work stays linear in the text lengths.
    """
    if len(body) < size:
        return []
    power = pow(_HASH_BASE, size, _HASH_MOD)
    index: dict[int, tuple[int, int]] = {}
    for number, (_, text) in enumerate(notes):
        hashes = _prefix_hashes(text)
        for start in range(len(text) - size + 1):
            index.setdefault(_window(hashes, start, size, power), (number, start))
    if not index:
        return []

    hashes = _prefix_hashes(body)
    runs: list[tuple[int, int, Message]] = []
    aligned: tuple[int, int] | None = None  # (note, position) matching the previous window
    for start in range(len(body) - size + 1):
        match: tuple[int, int] | None = None
        if aligned is not None:
            number, position = aligned[0], aligned[1] + 1
            text = notes[number][1]
            if position + size <= len(text) and text[position + size - 1] == body[start + size - 1]:
                match = (number, position)
        if match is None:
            found = index.get(_window(hashes, start, size, power))
            if found is not None:
                number, position = found
                if notes[number][1][position : position + size] == body[start : start + size]:
                    match = found
        aligned = match
        if match is None:
            continue
        end = start + size
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], end, runs[-1][2])
        else:
            runs.append((start, end, notes[match[0]][0]))
    return runs


class ReplyGuard:
    """Checks public replies against a :class:`ReplyPolicy`.

    >>> guard = ReplyGuard(ReplyPolicy(allowed_domains=["example.com"]))
    >>> [str(f) for f in guard.scan("Try https://evil.example.net/x")]
    ["link 'https://evil.example.net/x' at 4-30: host evil.example.net is not an allowed domain"]
    """

    def __init__(self, policy: ReplyPolicy) -> None:
        if not isinstance(policy, ReplyPolicy):
            raise ValidationError("policy", policy, "a ReplyPolicy")
        self.policy = policy
        self._terms = self._compile_terms(policy.forbidden_terms)

    @staticmethod
    def _compile_terms(terms: Iterable[str]) -> re.Pattern[str] | None:
        patterns: list[tuple[int, str]] = []
        for term in terms:
            folded = _fold_text(term)
            pattern = re.escape(folded)
            # Latin words match whole words only ("ass" is not in "class"); CJK has no spaces,
            # so CJK terms match anywhere.
            if _LATIN_WORD.match(folded[0]):
                pattern = r"(?<![a-z0-9\u00c0-\u024f])" + pattern
            if _LATIN_WORD.match(folded[-1]):
                pattern += r"(?![a-z0-9\u00c0-\u024f])"
            patterns.append((len(folded), pattern))
        if not patterns:
            return None
        patterns.sort(key=lambda item: -item[0])  # longest first: "free gift" before "free"
        return re.compile("|".join(pattern for _, pattern in patterns))

    def check(self, ticket: Ticket, body: str) -> list[Finding]:
        """All findings for ``body`` as a public reply on ``ticket``, in body order."""
        return self.scan(body, [m for m in ticket.messages if not m.public])

    def scan(self, body: str, internal_notes: Iterable[Message] = ()) -> list[Finding]:
        """Like :meth:`check`, with the internal notes given directly."""
        folded = _fold(body)
        findings = self._links(body, folded)
        if self.policy.check_internal_notes:
            findings += self._notes(body, folded, list(internal_notes))
        findings += self._forbidden(body, folded)
        findings.sort(key=lambda f: (f.start, f.end, f.kind))
        return findings

    def enforce(
        self,
        ticket: Ticket,
        body: str,
        *,
        override_by: str | None = None,
        override_role: str | None = None,
    ) -> list[Finding]:
        """Raise :class:`ReplyBlocked` if ``body`` has findings and no allowed override.

        An override needs both who (``override_by``) and their role, which must be one of the
        policy's ``override_roles``. With an allowed override the findings are returned so the
        desk can record them; a clean body returns ``[]``.
        """
        if override_by is not None and (
            not isinstance(override_by, str) or not override_by.strip()
        ):
            raise ValidationError("override_by", override_by, "who overrides: a non-blank name")
        if override_role is not None and not override_by:
            raise ValidationError("override_by", override_by, "who overrides, with override_role")
        findings = self.check(ticket, body)
        if not findings:
            return []
        allowed = self.policy.override_roles
        if override_by and override_role is not None and _role_name(override_role) in allowed:
            return findings
        raise ReplyBlocked(ticket.id, findings)

    # -- the three checks ------------------------------------------------------------------
    def _links(self, body: str, folded: _Folded) -> list[Finding]:
        findings: list[Finding] = []
        taken: list[tuple[int, int]] = []
        for match in _URL.finditer(folded.text):
            url = _trim(match.group())
            if not url:
                continue
            start, end = match.start(), match.start() + len(url)
            taken.append((start, end))
            # Browsers read a backslash in an http(s) URL as a slash (WHATWG URL standard):
            # https://evil.io\@example.com/ visits evil.io, where urlsplit sees example.com.
            url_as_visited = url.replace("\\", "/")
            try:
                host = urllib.parse.urlsplit(url_as_visited).hostname or ""
            except ValueError:  # e.g. a broken IPv6 literal
                host = url_as_visited.split("://", 1)[1].split("/", 1)[0]
            if host and not self.policy.allows_host(host):
                findings.append(self._link(body, folded, start, end, host))
        for match in _BARE.finditer(folded.text):
            host, tld = match.group(1), match.group(2)
            if not (host.startswith("www.") or tld in _LINK_TLDS or tld.startswith("xn--")):
                continue
            text = _trim(match.group())
            start, end = match.start(), match.start() + len(text)
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            if not self.policy.allows_host(host):
                findings.append(self._link(body, folded, start, end, host))
        return findings

    @staticmethod
    def _link(body: str, folded: _Folded, start: int, end: int, host: str) -> Finding:
        o_start, o_end = folded.span(start, end)
        detail = f"host {host} is not an allowed domain"
        return Finding("link", body[o_start:o_end], o_start, o_end, detail)

    def _notes(self, body: str, folded: _Folded, notes: list[Message]) -> list[Finding]:
        prepared = [(note, _fold(note.body).text) for note in notes if note.body]
        findings: list[Finding] = []
        for start, end, note in _copied_runs(folded.text, prepared, self.policy.min_note_overlap):
            # Report the run without the collapsed spaces at its edges.
            while start < end and folded.text[start] == " ":
                start += 1
            while start < end and folded.text[end - 1] == " ":
                end -= 1
            if start == end:
                continue
            o_start, o_end = folded.span(start, end)
            detail = f"copies {end - start} characters of internal note {note.id} by {note.author}"
            findings.append(Finding("internal_note", body[o_start:o_end], o_start, o_end, detail))
        return findings

    def _forbidden(self, body: str, folded: _Folded) -> list[Finding]:
        if self._terms is None:
            return []
        findings: list[Finding] = []
        for match in self._terms.finditer(folded.text):
            o_start, o_end = folded.span(match.start(), match.end())
            detail = f"forbidden term {self._original(match.group())!r}"
            findings.append(Finding("forbidden_term", body[o_start:o_end], o_start, o_end, detail))
        return findings

    def _original(self, folded_term: str) -> str:
        for term in self.policy.forbidden_terms:
            if _fold_text(term) == folded_term:
                return term
        return folded_term


def _trim(url: str) -> str:
    while url and (url[-1] in _TRAILING or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url
