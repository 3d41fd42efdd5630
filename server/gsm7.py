"""GSM 03.38 (3GPP TS 23.038) 7-bit alphabet: does a text fit one SMS segment?

One segment holds 160 GSM-7 characters, or only 70 once a single character
outside the alphabet forces UCS-2. Spanish is mostly inside it (ñ é ü ¿ ¡ are
there) but á í ó ú are not, so our messages are written without them and
names from the config are folded (á -> a) on purpose, with a log line, rather
than silently by the modem's encoder (Gammu folds them without a word).

It sits at the top of ``secadero.server`` and imports nothing of ours: the
alert messages (``alerts.messages``, which keep each SMS to one segment) and
the SMS notifiers (``notifiers.twilio``, ``notifiers.gammu``, which fold what
they send) both use it without depending on each other.
"""

from __future__ import annotations

import logging
from typing import Final

log = logging.getLogger(__name__)

# The basic table, in code-point order 0x00-0x7F. 0x1B is the escape to the extension table.
BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each costs two septets (escape + code).
EXTENSION: Final = frozenset("^{}\\[]~|€\f")
_BASIC_SET: Final = frozenset(BASIC) - {"\x1b"}
SINGLE_SEGMENT: Final = 160
SINGLE_SEGMENT_UCS2: Final = 70

# Letters Spanish uses that GSM-7 lacks, with the letter a reader still understands.
_FOLD: Final = str.maketrans({
    "á": "a", "í": "i", "ó": "o", "ú": "u", "Á": "A", "Í": "I", "Ó": "O", "Ú": "U",
    "ç": "Ç", "ê": "e", "â": "a", "ô": "o", "î": "i", "û": "u", "ï": "i", "ë": "e",
    "À": "A", "È": "E", "Ì": "I", "Ò": "O", "Ù": "U", "‘": "'", "’": "'", "“": '"', "”": '"',
    "–": "-", "—": "-", "…": "...",
})

assert len(BASIC) == 128, len(BASIC)


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM-7 basic or extension table."""
    return all(ch in _BASIC_SET or ch in EXTENSION for ch in text)


def septets(text: str) -> int:
    """Length in GSM-7 septets (extension characters count twice). Text must be GSM-7."""
    return sum(2 if ch in EXTENSION else 1 for ch in text)


def fits_one_segment(text: str) -> bool:
    """True if the text goes as one GSM-7 SMS of at most 160 septets."""
    return is_gsm7(text) and septets(text) <= SINGLE_SEGMENT


def fold(text: str) -> str:
    """Replace characters GSM-7 lacks with near equivalents (á -> a); '?' for the rest."""
    folded = text.translate(_FOLD)
    if not is_gsm7(folded):
        folded = "".join(ch if ch in _BASIC_SET or ch in EXTENSION else "?" for ch in folded)
    if folded != text:
        log.info("folded to GSM-7: %r -> %r", text, folded)
    return folded
