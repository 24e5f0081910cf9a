"""Reply guard: stop a public reply that links off-site, leaks an internal note or says
something the desk never says.

The guard checks a reply body against a :class:`ReplyPolicy` and reports each problem as a
:class:`Finding` with its position in the body:

* ``link``: an ``http(s)://`` URL (or another scheme's, or a protocol-relative ``//host``),
  or a bare domain such as ``www.example.org`` or ``example.cn/path``, whose host (the one a
  browser would visit) is neither an allowed domain nor a subdomain of one;
* ``internal_note``: a run of at least ``min_note_overlap`` characters (whitespace collapsed)
  copied from one of the ticket's internal messages (``public=False``);
* ``forbidden_term``: a listed term, matched case-insensitively and through accents and other
  marks that only decorate a letter (those the term has must be there).

Text is compared after NFKC folding and case folding, so full-width ``ｅｖｉｌ．ｃｏｍ`` and
``ＦＲＥＥ`` are caught as ``evil.com`` and ``free``; invisible characters (zero-width,
variation selectors and the other default-ignorable ones) are ignored.

>>> guard = ReplyGuard(ReplyPolicy(allowed_domains=["example.com"], forbidden_terms=["保证"]))
>>> [f.text for f in guard.scan("See https://help.example.com/a or ｅｖｉｌ．ｉｏ. 保证退款!")]
['ｅｖｉｌ．ｉｏ', '保证']
"""

from __future__ import annotations

import functools
import re
import unicodedata
import urllib.parse
from collections.abc import Collection, Iterable
from typing import Any, Literal

import attrs

from supportflow._textmatch import INVISIBLE
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
_REST = (
    r"(?:[^\s<>\"'`/?#\\.\u3000-\u303f\uff00-\uffef]+\.)*"
    rf"(?:[\u3400-\u9fff\uac00-\ud7af]+{_CJK_HOST_END})?"
    rf"[^{_STOP}]*"
)
# Browsers go to evil.io for https:evil.io, https:/evil.io and https:\\evil.io alike.
_URL = re.compile(r"https?:[/\\]*" + _REST)
# Labels may hold accented Latin, Greek and Cyrillic letters (münchen.de, a look-alike
# еxample.com); not CJK, which runs straight on into a domain in Chinese text.
_LABEL = r"[a-z0-9\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff]"
_BARE = re.compile(
    rf"(?<![a-z0-9@.\-_/:\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff])"
    rf"((?:{_LABEL}(?:(?:{_LABEL}|-){{0,61}}{_LABEL})?\.)+([a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}}))"
    r"(?![a-z0-9\-_@\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff])"
    rf"(?::\d{{1,5}})?(?:[/?#][^{_STOP}]*)?"
)
# Any scheme followed by two or more slashes, and a protocol-relative "//host" (or "\\\\host",
# which browsers read the same) where a link can start: not inside a word, a number (12//2026)
# or a path (a//b).
_OTHER = re.compile(
    r"(?:(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*:"
    r"|(?<![^\s(\[{<>\"'`=,;|*\u3000-\u303f\u3400-\u9fff\uac00-\ud7af\uff00-\uffef]))"
    r"[/\\]{2,}" + _REST
)
# Browsers read an ideographic full stop between labels as a dot: example.com。evil。io is
# evil.io's subdomain. Taken as such when the name ends in a link TLD, so that "example.com。
# Thanks" stays the end of a sentence.
_IDEOGRAPHIC_HOST = re.compile(r"[a-z0-9\-]+(?:[.\u3002][a-z0-9\-]+)*\u3002[a-z0-9\-]+")
_TRAILING = ".,;:!?]}'\"*_~"
# Scripts written with spaces between words, where a term matches whole words only.
_WORD = r"a-z0-9\u00c0-\u024f\u0370-\u03ff\u0400-\u052f"
_LATIN_WORD = re.compile(f"[{_WORD}]")
# Script-neutral combining marks: accents, overlays (strike-through), enclosing circles.
_GENERIC_MARKS = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
)
# Cyrillic and Greek letters drawn like Latin ones (in the case given), for words that mix
# scripts: "раssword" with a Cyrillic р and а reads as password.
_TO_LATIN = {
    "cyrillic": dict(
        zip("асеорхуіјѕһԁԛԝӏАВСЕНІЈКМОРЅТХУԀԚԜ", "aceopxyijshdqwlABCEHIJKMOPSTXYDQW", strict=True)
    ),
    "greek": dict(zip("αορικνυχγΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "aopikvuxyABEZHIKMNOPTYX", strict=True)),
}
_FROM_LATIN = {
    script: {latin: other for other, latin in table.items()} for script, table in _TO_LATIN.items()
}
_WORDS = re.compile(r"[^\W\d_]+")
_ASCII_RUN = re.compile("[!-~]+")
_SPACE_RUN = re.compile(r"\s+")
_LONG_SPACE = re.compile(r"\s\s+")
_NO_MARKS: frozenset[str] = frozenset()
_GREEK_OR_CYRILLIC = re.compile("[\u0370-\u03ff\u0400-\u052f]")
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


@functools.lru_cache(maxsize=4096)
def _ignorable(char: str) -> bool:
    """Invisible characters a reader never sees: format characters (zero-width space and
    joiners, soft hyphen, tags) and the other default-ignorable ones (variation selectors,
    the combining grapheme joiner, Hangul fillers)."""
    return INVISIBLE.match(char) is not None


@functools.lru_cache(maxsize=4096)
def _joins(char: str) -> bool:
    """Whether ``char`` belongs to the character before it: a mark, or an invisible one."""
    return bool(
        unicodedata.combining(char) or unicodedata.category(char)[0] == "M" or _ignorable(char)
    )


def _decoration(mark: str, base: str) -> bool:
    """Whether ``mark`` only decorates ``base`` for a reader: an accent, a strike-through or
    an enclosing circle from the script-neutral blocks, or any mark on a Latin, Greek or
    Cyrillic letter. Marks that spell words in their own script (Thai vowels, Devanagari
    signs, kana voicing) are letters, not decoration."""
    return unicodedata.category(mark) in ("Mn", "Me") and (
        _GENERIC_MARKS.match(mark) is not None or base < "\u0530"
    )


@functools.lru_cache(maxsize=4096)
def _fold_cluster(cluster: str, strip: bool) -> tuple[tuple[str, frozenset[str]], ...]:
    """A base character with its marks, folded: each character with the decorating marks
    taken off it (only when ``strip``)."""
    visible = "".join(char for char in cluster if not _ignorable(char))
    if not visible:
        return ()
    if visible.isspace():
        return ((" ", frozenset()),)
    folded = unicodedata.normalize("NFKC", visible).casefold()
    if not strip:
        return tuple((" " if char.isspace() else char, frozenset()) for char in folded)
    out: list[tuple[str, frozenset[str]]] = []
    for char in unicodedata.normalize("NFKD", folded):
        if out and _decoration(char, out[-1][0]):
            out[-1] = (out[-1][0], out[-1][1] | {char})
        else:
            out.append((" " if char.isspace() else char, frozenset()))
    return tuple(out)


def _fold(text: str, *, marks: list[frozenset[str]] | None = None) -> _Folded:
    """``text`` NFKC- and case-folded, whitespace collapsed, invisible characters dropped.

    With ``marks`` (a list to fill), the text is also decomposed and decorating marks are
    taken out of it: ``marks[i]`` holds those that sat on the i-th character.
    """
    n = len(text)
    starts: list[int] = []
    if text.isascii():  # no marks, nothing invisible, nothing NFKC changes
        kept = 0
        for spaces in _LONG_SPACE.finditer(text):  # a run of spaces folds to its first
            starts.extend(range(kept, spaces.start() + 1))
            kept = spaces.end()
        starts.extend(range(kept, n))
        if marks is not None:
            marks.extend([_NO_MARKS] * len(starts))
        return _Folded(_SPACE_RUN.sub(" ", text).lower(), starts, [*starts[1:], n][: len(starts)])
    out: list[str] = []
    ends: list[int] = []
    strip = marks is not None
    i = 0
    while i < n:
        run = _ASCII_RUN.match(text, i)
        if run is not None:
            # Printable ASCII folds to itself, lower-cased, unless a mark follows its last
            # character: that one goes the long way, with its mark.
            j = run.end()
            if j < n and _joins(text[j]):
                j -= 1
            if j > i:
                out.extend(text[i:j].lower())
                starts.extend(range(i, j))
                ends.extend(range(i + 1, j + 1))
                if marks is not None:
                    marks.extend([_NO_MARKS] * (j - i))
                i = j
                continue
        space = _SPACE_RUN.match(text, i)
        if space is not None and (space.end() == n or not _joins(text[space.end()])):
            j = space.end()
            if out and out[-1] == " ":
                ends[-1] = j
            else:
                out.append(" ")
                starts.append(i)
                ends.append(j)
                if marks is not None:
                    marks.append(_NO_MARKS)
            i = j
            continue
        j = i + 1
        while j < n and _joins(text[j]):
            j += 1  # keep a base character with its marks so NFKC can compose them
        folded = _fold_cluster(text[i:j], strip)
        if folded and folded[0][0] == " " and len(folded) == 1 and out and out[-1] == " ":
            ends[-1] = j  # whitespace collapses
        else:
            for char, on in folded:
                out.append(char)
                starts.append(i)
                ends.append(j)
                if marks is not None:
                    marks.append(on)
        i = j
    return _Folded("".join(out), starts, ends)


def _script(char: str) -> str | None:
    if "a" <= char <= "z" or "\u00c0" <= char <= "\u024f":
        return "latin"
    if "\u0400" <= char <= "\u052f":
        return "cyrillic"
    if "\u0370" <= char <= "\u03ff":
        return "greek"
    return None


def _one_script(original: str, folded: _Folded) -> str:
    """``folded.text`` with each word that mixes Latin with Cyrillic or Greek letters written
    in the script most of its letters are in, where a letter has a look-alike there: a reader
    sees password in "раssword" and гарантия in "гaрaнтия" (with a Latin a)."""
    text = folded.text
    if _GREEK_OR_CYRILLIC.search(text) is None:
        return text
    chars: list[str] | None = None
    for word in _WORDS.finditer(text):
        counts = {"latin": 0, "cyrillic": 0, "greek": 0}
        for char in word.group():
            script = _script(char)
            if script is not None:
                counts[script] += 1
        if sum(1 for count in counts.values() if count) < 2:
            continue
        main = max(counts, key=lambda name: (counts[name], name == "latin"))  # Latin if tied
        for index in range(word.start(), word.end()):
            script = _script(text[index])
            start = folded.starts[index]
            if script in (None, main) or folded.ends[index] - start != 1:
                continue
            if main == "latin":
                target = _TO_LATIN[script].get(original[start])
            elif script == "latin":
                target = _FROM_LATIN[main].get(original[start])
            else:
                target = None  # Cyrillic against Greek
            if target is not None:
                chars = list(text) if chars is None else chars
                chars[index] = target.casefold()
    return text if chars is None else "".join(chars)


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
        # Each term without its decorating marks, and the marks it does have, by position.
        self._term_marks: list[tuple[str, list[frozenset[str]]]] = []
        for term in policy.forbidden_terms:
            marks: list[frozenset[str]] = []
            folded = _fold(term, marks=marks)
            first = len(folded.text) - len(folded.text.lstrip())
            last = len(folded.text.rstrip())
            self._term_marks.append((term, marks[first:last]))
        patterns = self._term_patterns(
            _one_script(term, _fold(term, marks=[])).strip() for term in policy.forbidden_terms
        )
        # One alternation, longest first ("free gift" before "free"), and each term alone for
        # when the first term found lacks its marks here (crème brûlée in "creme brulee").
        self._terms = re.compile("|".join(patterns)) if patterns else None
        self._each = [re.compile(pattern) for pattern in patterns]

    @staticmethod
    def _term_patterns(terms: Iterable[str]) -> list[str]:
        patterns: list[tuple[int, str]] = []
        for number, folded in enumerate(terms):
            pattern = re.escape(folded)
            # Latin, Greek and Cyrillic words match whole words only ("ass" is not in "class",
            # "кот" not in "который"); CJK has no spaces, so CJK terms match anywhere.
            if _LATIN_WORD.match(folded[0]):
                pattern = f"(?<![{_WORD}])" + pattern
            if _LATIN_WORD.match(folded[-1]):
                pattern += f"(?![{_WORD}])"
            patterns.append((len(folded), f"(?P<t{number}>{pattern})"))
        patterns.sort(key=lambda item: -item[0])
        return [pattern for _, pattern in patterns]

    def check(self, ticket: Ticket, body: str) -> list[Finding]:
        """All findings for ``body`` as a public reply on ``ticket``, in body order."""
        return self.scan(body, [m for m in ticket.messages if not m.public])

    def scan(self, body: str, internal_notes: Iterable[Message] = ()) -> list[Finding]:
        """Like :meth:`check`, with the internal notes given directly."""
        folded = _fold(body)
        findings = self._links(body, folded)
        if self.policy.check_internal_notes:
            findings += self._notes(body, folded, list(internal_notes))
        findings += self._forbidden(body)
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
        text = folded.text
        if "\u3002" in text:
            text = _IDEOGRAPHIC_HOST.sub(_dotted, text)  # same length, same positions
        findings: list[Finding] = []
        taken: list[tuple[int, int]] = []
        for match in _URL.finditer(text):
            url = _trim(match.group())
            host = _visited_host(url)
            if not host:
                continue
            start, end = match.start(), match.start() + len(url)
            taken.append((start, end))
            if not self.policy.allows_host(host):
                findings.append(self._link(body, folded, start, end, host))
        for match in _OTHER.finditer(text):
            url = _trim(match.group())
            start, end = match.start(), match.start() + len(url)
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            host = _visited_host(url)
            # "//" opens a comment in code, so a host after it counts only when it looks like
            # a domain (as for bare domains below) or is an IP address.
            if not host or not _looks_like_host(host):
                continue
            taken.append((start, end))
            if not self.policy.allows_host(host):
                findings.append(self._link(body, folded, start, end, host))
        for match in _BARE.finditer(text):
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
        key = _host_key(host)
        shown = host if key == host.lower() else f"{host} ({key})"  # look-alikes show as punycode
        detail = f"host {shown} is not an allowed domain"
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

    def _forbidden(self, body: str) -> list[Finding]:
        if self._terms is None:
            return []
        # Compared without accents and other decorating marks, so that pas\u0301sword and
        # pa\u0336ssword are password; the marks a term does have must be in the reply too
        # (año is not ano), except on capitals, which French and Greek write without them.
        marks: list[frozenset[str]] = []
        folded = _fold(body, marks=marks)
        text = _one_script(body, folded)
        findings: list[Finding] = []
        position = 0
        while (found := self._terms.search(text, position)) is not None:
            start = found.start()
            candidates = (found, *(pattern.match(text, start) for pattern in self._each))
            for match in candidates:
                if match is None:
                    continue
                term, wanted = self._term_marks[int((match.lastgroup or "t0")[1:])]
                if all(
                    need <= marks[start + k] or body[folded.starts[start + k]].isupper()
                    for k, need in enumerate(wanted)
                ):
                    o_start, o_end = folded.span(start, match.end())
                    detail = f"forbidden term {term!r}"
                    shown = body[o_start:o_end]
                    findings.append(Finding("forbidden_term", shown, o_start, o_end, detail))
                    position = match.end()
                    break
            else:
                position = start + 1
        return findings


def _dotted(match: re.Match[str]) -> str:
    name = match.group()
    return name.replace("\u3002", ".") if _looks_like_host(name.replace("\u3002", ".")) else name


def _visited_host(url: str) -> str:
    """The host a browser visits for ``url`` (with a scheme, or protocol-relative ``//``)."""
    rest = url if url[:1] in "/\\" else url.partition(":")[2]
    # Browsers read a backslash in a URL as a slash (WHATWG URL standard), and skip any run of
    # slashes after http(s): (https:evil.io and https:///evil.io visit evil.io); urlsplit
    # would see example.com in https://evil.io\\@example.com/.
    visited = "https://" + rest.replace("\\", "/").lstrip("/")
    try:
        host = urllib.parse.urlsplit(visited).hostname or ""
    except ValueError:  # e.g. a broken IPv6 literal
        host = visited[8:].split("/", 1)[0]
    return urllib.parse.unquote(host)  # browsers decode a host's %-escapes: %65vil.io


def _looks_like_host(host: str) -> bool:
    """A name that starts with www. or ends in a link TLD (or is an IDN), or an IP address."""
    key = _host_key(host)
    labels = key.split(".")
    if ":" in key or (len(labels) == 4 and all(label.isdigit() for label in labels)):
        return True
    return len(labels) > 1 and (
        labels[0] == "www" or labels[-1] in _LINK_TLDS or labels[-1].startswith("xn--")
    )


def _trim(url: str) -> str:
    while url and (url[-1] in _TRAILING or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url
