"""The glyphs of the mini world's corpus and the names captions call them by.

Digits, letters (the ones that look like digits or like each other first) and symbols; each
glyph has several name phrases (``GLYPH_NAMES``: "the digit 1", "a small l", "the capital
letter I", ...) and a sampling weight (digits about 45 %), so that the look-alikes the class
names must tell apart are common in the corpus.
"""

from __future__ import annotations

import numpy as np

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

DIGITS = "0123456789"
#: Letters that look like digits (or like each other); sampled often.
LOOKALIKE_LETTERS = "lIOoSsZzBbgqGAELTDUuCcJjiYyt"
OTHER_LETTERS = "".join(
    c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in LOOKALIKE_LETTERS
)
LETTERS = LOOKALIKE_LETTERS + OTHER_LETTERS

_SYMBOL_NAMES: dict[str, tuple[str, ...]] = {
    "+": ("plus sign", "plus symbol", "plus"),
    "-": ("minus sign", "dash", "hyphen"),
    "=": ("equals sign", "equal sign", "equals symbol"),
    "#": ("hash sign", "hash symbol", "hashtag symbol"),
    "%": ("percent sign", "percent symbol", "percentage sign"),
    "?": ("question mark",),
    "!": ("exclamation mark", "exclamation point"),
    "&": ("ampersand", "and sign"),
    "@": ("at sign", "at symbol"),
    "*": ("asterisk", "star symbol"),
    "$": ("dollar sign", "dollar symbol"),
    "/": ("slash", "forward slash"),
    "<": ("less-than sign", "left angle bracket"),
    ">": ("greater-than sign", "right angle bracket"),
    "(": ("opening parenthesis", "left parenthesis"),
    ")": ("closing parenthesis", "right parenthesis"),
}
SYMBOLS = "".join(_SYMBOL_NAMES)


def glyph_cores(ch: str) -> tuple[str, ...]:
    """Name phrases of one glyph without a determiner (adjectives can go in front)."""
    if ch in DIGITS:
        w = _NUMBER_WORDS[int(ch)]
        return (f"digit {ch}", f"number {w}", ch, f"numeral {w}", f"number {ch}", w, f"digit {w}")
    if ch.isalpha() and ch.islower():
        return (
            f"lowercase letter {ch}",
            f"small {ch}",
            f"lowercase {ch}",
            f"small letter {ch}",
            f"letter {ch} in lower case",
        )
    if ch.isalpha():
        return (
            f"capital letter {ch}",
            f"uppercase {ch}",
            f"capital {ch}",
            f"uppercase letter {ch}",
            f"letter {ch}",
        )
    return _SYMBOL_NAMES[ch]


def article(word: str) -> str:
    """'a' or 'an' in front of ``word``."""
    w = word.lower()
    if w.startswith(("one", "uni", "use")):
        return "a"
    if w.startswith(("8", "11", "18")) or w[:1] in "aeiou":
        return "an"
    return "a"


def _with_determiners(core: str) -> tuple[str, ...]:
    return (f"the {core}", f"{article(core)} {core}")


#: glyph char -> name paraphrases (with determiners, as they appear in captions).
GLYPH_NAMES: dict[str, tuple[str, ...]] = {
    ch: tuple(p for core in glyph_cores(ch) for p in _with_determiners(core))
    for ch in DIGITS + LETTERS + SYMBOLS
}


def glyph_kind(ch: str) -> str:
    """'digit', 'letter' or 'symbol'."""
    return "digit" if ch in DIGITS else "letter" if ch.isalpha() else "symbol"


def glyph_weights() -> dict[str, float]:
    """Sampling probability of each glyph: digits ~45 %, look-alike letters ~30 %, rest rarer."""
    groups = ((DIGITS, 0.45), (LOOKALIKE_LETTERS, 0.30), (OTHER_LETTERS, 0.15), (SYMBOLS, 0.10))
    return {c: share / len(chars) for chars, share in groups for c in chars}


_GLYPHS = tuple(glyph_weights())
_GLYPH_P = np.array([glyph_weights()[c] for c in _GLYPHS])
_GLYPH_P = _GLYPH_P / _GLYPH_P.sum()
_GLYPH_CUM = np.cumsum(_GLYPH_P)


def pick_glyph(rng: np.random.Generator) -> str:
    """One glyph drawn by its sampling weight (inverse CDF of one ``rng.random()``)."""
    k = int(np.searchsorted(_GLYPH_CUM, rng.random(), "right"))
    return _GLYPHS[min(k, len(_GLYPHS) - 1)]
