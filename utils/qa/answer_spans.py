"""Finding answer strings in their context, and repairing offsets that do not line up.

Every canonical QA record must satisfy `context[s:s + len(t)] == t` for each answer (t, s).
Datasets reach that state differently: SQuAD already does; DuoRC gives bare answer strings that
must be searched for; Quoref ships some offsets that are a few characters off.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MatchKind = Literal["exact", "case_insensitive", "trimmed"]


@dataclass(frozen=True)
class Located:
    """An answer found in its context: the span as it reads in the context, and how it was found."""

    start: int
    text: str
    how: MatchKind
    occurrences: int
    inside_word: bool = False


def span_matches(context: str, text: str, start: int) -> bool:
    """The canonical invariant for one answer: `context[start:start+len(text)] == text`."""
    return 0 <= start and text != "" and context[start:start + len(text)] == text


def locate_answer(context: str, answer: str) -> Located | None:
    """Find a free-form answer string in the context.

    Tries, in order: the exact string; the string ignoring letter case (the span keeps the
    context's casing, so the invariant holds); the string without surrounding whitespace and a
    final full stop, exact then ignoring case. The first form with an occurrence that stands as
    whole words wins ("China" in "... in China." rather than in "Chinatown"); only when no form
    has one is the first occurrence inside a longer word used (`inside_word`). `occurrences` says how many there were, so
    callers can count ambiguous answers.

    Returns:
        The located span, or None when the answer is not in the context in any of these forms.
    """
    candidates: list[tuple[str, bool]] = [(answer, False), (answer, True)]
    trimmed = answer.strip().rstrip(".").strip()
    if trimmed and trimmed != answer:
        candidates += [(trimmed, False), (trimmed, True)]
    fallback: Located | None = None
    for index, (needle, ignore_case) in enumerate(candidates):
        if not needle:
            continue
        matches = list(re.finditer(re.escape(needle), context, re.IGNORECASE if ignore_case else 0))
        if not matches:
            continue
        how: MatchKind = "trimmed" if index >= 2 else ("case_insensitive" if ignore_case else "exact")
        whole = [m for m in matches if _whole_words(context, m.start(), m.end())]
        if whole:
            return Located(whole[0].start(), context[whole[0].start():whole[0].end()], how, len(matches))
        if fallback is None:
            first = matches[0]
            fallback = Located(first.start(), context[first.start():first.end()], how, len(matches), inside_word=True)
    return fallback


def _whole_words(context: str, start: int, end: int) -> bool:
    """The span does not cut a word: no letter or digit glued to either edge of it."""
    glued_left = start > 0 and context[start].isalnum() and context[start - 1].isalnum()
    glued_right = end < len(context) and context[end - 1].isalnum() and context[end].isalnum()
    return not (glued_left or glued_right)


def repair_offset(context: str, text: str, start: int, max_shift: int) -> int | None:
    """The occurrence of `text` nearest to `start`, if it lies within `max_shift` characters.

    Used for published offsets that are off by a few characters (Quoref ships 50 such answers in
    its dev set, most of them off by one). Ties go to the earlier occurrence.
    """
    if not text:
        return None
    best: int | None = None
    lo = max(0, start - max_shift)
    hi = min(len(context), start + max_shift + len(text))
    position = context.find(text, lo, hi)
    while position != -1:
        if abs(position - start) <= max_shift and (best is None or abs(position - start) < abs(best - start)):
            best = position
        position = context.find(text, position + 1, hi)
    return best
