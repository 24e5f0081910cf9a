"""Text matching for the classifier: one normal form and one automaton for every keyword.

Text and keywords are brought to the same normal form (:func:`normalize`): NFKC folds
full-width and half-width forms (``"ＶＰＮ"`` → ``"VPN"``), casefold removes case, and runs of
white space become one space. A keyword that contains a character of a script written without
spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Burmese, Yi) matches anywhere; any
other keyword matches only as a whole word or phrase, so ``"sue"`` is not found in
``"issue"``.

:class:`Automaton` is a pure-Python Aho–Corasick automaton: it finds every keyword, overlapping
ones included, in one pass over the text, however many keywords there are.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress
from operator import attrgetter

__all__ = [
    "INVISIBLE",
    "Automaton",
    "find_naive",
    "has_unspaced",
    "is_unspaced",
    "is_word_char",
    "normalize",
]

# The scripts written without spaces between words, where a word has no boundary to find:
# Han, kana and CJK symbols, Thai, Lao, Khmer, Myanmar and Yi. (Hangul is kept here too:
# Korean spaces words, but a particle follows a noun with no space, "서버가" for "서버".)
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x9FFF),  # radicals, CJK symbols, kana, Bopomofo, Hangul compatibility, Han
    (0xA000, 0xA4CF),  # Yi
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xAC00, 0xD7FF),  # Hangul syllables and Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF65, 0xFFDC),  # half-width kana and Hangul (NFKC widens them, but be safe)
    (0x20000, 0x3FFFF),  # Han extensions B and beyond
)


def is_unspaced(char: str) -> bool:
    """True for a character of a script written without spaces between words (Chinese,
    Japanese, Korean, Thai, Lao, Khmer, Burmese, Yi).

    >>> is_unspaced("网"), is_unspaced("ร"), is_unspaced("a")
    (True, True, False)
    """
    code = ord(char)
    return any(low <= code <= high for low, high in _UNSPACED_RANGES)


def has_unspaced(text: str) -> bool:
    """True if ``text`` contains at least one :func:`is_unspaced` character.

    >>> has_unspaced("vpn连不上"), has_unspaced("vpn down")
    (True, False)
    """
    return not text.isascii() and any(is_unspaced(char) for char in text)


def is_word_char(char: str) -> bool:
    """True if ``char`` continues a Latin-style word (so a whole-word match cannot end there).

    Characters of scripts without spaces are not word characters: ``"vpn"`` is a whole
    word in ``"我的vpn坏了"``.

    >>> is_word_char("x"), is_word_char("7"), is_word_char("-"), is_word_char("的")
    (True, True, False, False)
    """
    if char.isascii():  # the common case, without the range scan
        return char.isalnum() or char == "_"
    return char.isalnum() and not is_unspaced(char)


#: Code points a reader never sees: the format characters (Unicode category Cf: zero-width
#: spaces and joiners, soft hyphens, bidi controls, tags) and the other default-ignorable ones
#: (the combining grapheme joiner, Hangul fillers, Khmer inherent vowels, variation
#: selectors). "re\u200bfund" reads as "refund" and must match as it. Written out: asking
#: unicodedata for every code point would cost each import tens of milliseconds.
INVISIBLE = re.compile(
    "[\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u115f\u1160"
    "\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)


def normalize(text: str) -> str:
    """The matching form of ``text``: NFKC, casefolded, :data:`INVISIBLE` characters
    (zero-width spaces and joiners, bidi controls, soft hyphens, variation selectors)
    removed, white space collapsed to one space.

    >>> normalize("  ＶＰＮ   Down\\n again ")
    'vpn down again'
    >>> normalize("找ＬＥＡＤＥＲ！")
    '找leader!'
    """
    if text.isascii():
        folded = text.lower()  # casefold() equals lower() on ASCII, and NFKC is a no-op
    else:
        # Casefolding can leave text that is not NFKC again (e.g. "ǰ"), so normalise twice.
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        folded = INVISIBLE.sub("", folded)
    return " ".join(folded.split())


def _boundaries(word: str) -> tuple[bool, bool]:
    """Whether a match of ``word`` needs a word boundary before it and after it."""
    if has_unspaced(word):
        return False, False
    return is_word_char(word[0]), is_word_char(word[-1])


def _accept(text: str, start: int, end: int, left: bool, right: bool) -> bool:
    if left and start > 0 and is_word_char(text[start - 1]):
        return False
    return not (right and end < len(text) and is_word_char(text[end]))


_Hit = tuple[str, int, bool, bool]  # word, its length, needs a boundary before, after
# Messages remembered per automaton, in characters and in entries: a few MB at most.
_MESSAGE_MEMO_CHARS = 2_000_000
_MESSAGE_MEMO_ENTRIES = 10_000
_CACHE_LIMIT = 1_000_000  # memoised transitions per automaton; beyond it they are recomputed


class _State(dict[str, "_State"]):
    """One automaton state: a dict from the next character to the next state.

    It starts with the trie's edges; a missing character follows the failure link once and
    memoises the answer (a lazily built DFA), so matching costs one dict lookup per character.
    """

    __slots__ = ("fail", "out", "owner")

    def __init__(self, owner: Automaton, out: tuple[_Hit, ...]) -> None:
        super().__init__()
        self.owner = owner
        self.out = out
        self.fail: _State | None = None  # None only for the root

    def __missing__(self, char: str) -> _State:
        # Follow the failure links in a loop, not by recursion: a long periodic keyword
        # ("ab" * 500) has a failure chain as long as itself, deeper than Python's stack.
        # Memoised entries on the way are the DFA's answers for those states, so reuse them.
        state, nxt = self, None
        while nxt is None:
            if state.fail is None:  # the root: a character it has no edge for stays there
                nxt = dict.get(state, char, state)
            else:
                state = state.fail
                nxt = dict.get(state, char)
        owner = self.owner
        if owner.cached < _CACHE_LIMIT:  # bound the memory a stream of odd characters can take
            owner.cached += 1
            self[char] = nxt
        return nxt


_STEP = dict.__getitem__  # a C-level step for itertools.accumulate: no Python frame per character
_OUT = attrgetter("out")


class Automaton:
    """All keywords in one Aho–Corasick automaton; :meth:`find` reports which of them occur.

    Words must already be normalised. The only state that changes after building is the
    memo of transitions, whose updates are idempotent, so one automaton may serve many threads.

    >>> automaton = Automaton(["vpn", "sue", "your manager", "断网"])
    >>> sorted(automaton.find(normalize("Issue: VPN 断网了, get your manager")))
    ['vpn', 'your manager', '断网']
    """

    __slots__ = ("_memo_chars", "_messages", "_root", "cached", "words")

    def __init__(self, words: Iterable[str]) -> None:
        self.words: frozenset[str] = frozenset(word for word in words if word)
        self.cached = 0
        self._messages: dict[str, frozenset[str]] = {}  # raw message text -> words found
        self._memo_chars = 0
        goto: list[dict[str, int]] = [{}]
        own: list[list[_Hit]] = [[]]
        for word in sorted(self.words):  # sorted: the same words always give the same automaton
            state = 0
            for char in word:
                nxt = goto[state].get(char)
                if nxt is None:
                    nxt = len(goto)
                    goto[state][char] = nxt
                    goto.append({})
                    own.append([])
                state = nxt
            own[state].append((word, len(word), *_boundaries(word)))
        fail = [0] * len(goto)
        out: list[tuple[_Hit, ...]] = [()] * len(goto)
        # Breadth first, so a state's failure target is complete before the state is reached.
        queue = deque(goto[0].values())
        for state in queue:
            out[state] = tuple(own[state])
        while queue:
            state = queue.popleft()
            for char, nxt in goto[state].items():
                queue.append(nxt)
                target = fail[state]
                while target and char not in goto[target]:
                    target = fail[target]
                fail[nxt] = goto[target].get(char, 0)
                out[nxt] = tuple(own[nxt]) + out[fail[nxt]]
        states = [_State(self, hits) for hits in out]
        for index, edges in enumerate(goto):
            states[index].update((char, states[nxt]) for char, nxt in edges.items())
            if index:
                states[index].fail = states[fail[index]]
        self._root = states[0]

    def find(self, text: str) -> set[str]:
        """The words that occur in ``text`` (normalised), respecting word boundaries."""
        return self.find_each((text,))[0]

    def find_message(self, text: str) -> frozenset[str]:
        """:meth:`find` on ``text`` once normalised, remembered: messages never change, and a
        thread is read again whenever it grows. Safe across threads (a race only recomputes)."""
        memo = self._messages
        found = memo.get(text)
        if found is None:
            found = frozenset(self.find(normalize(text)))
            self._memo_chars += len(text)
            # Bounded: a long-lived worker sees an endless stream of messages.
            if self._memo_chars > _MESSAGE_MEMO_CHARS or len(memo) >= _MESSAGE_MEMO_ENTRIES:
                memo.clear()
                self._memo_chars = len(text)
            memo[text] = found
        return found

    def find_each(self, texts: Sequence[str]) -> list[set[str]]:
        """:meth:`find` for several normalised texts in one pass.

        The texts are joined by a line break: normalised words never contain one (white space
        is collapsed to a space), and it is a word boundary, so no match spans two texts.

        >>> automaton = Automaton(["vpn", "断网"])
        >>> [sorted(words) for words in automaton.find_each(["vpn", "", "断网vpn"])]
        [['vpn'], [], ['vpn', '断网']]
        """
        text = "\n".join(texts)
        starts = list(accumulate((len(part) + 1 for part in texts[:-1]), initial=0))
        found: list[set[str]] = [set() for _ in texts]
        # outs[k] holds the words that end after the k-th character.
        outs = list(map(_OUT, accumulate(text, _STEP, initial=self._root)))
        for end in compress(range(len(outs)), outs):
            for word, length, left, right in outs[end]:
                start = end - length
                if (not left and not right) or _accept(text, start, end, left, right):
                    found[bisect_right(starts, start) - 1 if len(starts) > 1 else 0].add(word)
        return found


def find_naive(words: Iterable[str], text: str) -> set[str]:
    """The reference matcher: the same answer as :class:`Automaton`, one word at a time.

    The tests check the automaton against it; early warning uses it for the few words a
    substring test found, where one C search per word beats the automaton's pass.

    >>> sorted(find_naive(["sue", "vpn"], "issue with vpn"))
    ['vpn']
    """
    found: set[str] = set()
    for word in words:
        if not word:
            continue
        left, right = _boundaries(word)
        start = text.find(word)
        while start >= 0:
            if _accept(text, start, start + len(word), left, right):
                found.add(word)
                break
            start = text.find(word, start + 1)
    return found
