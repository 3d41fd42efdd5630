"""Every mosquitto_pub example in docs/protocol.md goes through the real decoder.

Examples preceded by ``# rejected: REASON [FIELD]`` must be refused with
exactly that reason and field; all others must decode.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from secadero.contract import decode
from secadero.errors import ProtocolError

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def examples() -> list[tuple[str, str, bytes, tuple[str, str | None] | None]]:
    found = []
    expected: tuple[str, str | None] | None = None
    for number, line in enumerate(DOC.read_text().splitlines(), start=1):
        marker = re.match(r"# rejected: (\S+)(?: (\S+))?$", line)
        if marker:
            expected = (marker.group(1), marker.group(2))
            continue
        if line.startswith("mosquitto_pub "):
            argv = shlex.split(line)
            topic = argv[argv.index("-t") + 1]
            payload = argv[argv.index("-m") + 1].encode()
            found.append((f"line {number}", topic, payload, expected))
            expected = None
    return found


def test_the_document_has_examples_of_both_kinds() -> None:
    found = examples()
    assert sum(1 for *_, expected in found if expected is None) >= 10
    assert sum(1 for *_, expected in found if expected is not None) >= 5


@pytest.mark.parametrize(("where", "topic", "payload", "expected"), examples(),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_example(where: str, topic: str, payload: bytes,
                 expected: tuple[str, str | None] | None) -> None:
    if expected is None:
        envelope = decode(topic, payload)
        assert envelope.kind == topic.rsplit("/", 1)[1]
    else:
        with pytest.raises(ProtocolError) as info:
            decode(topic, payload)
        assert (info.value.reason, info.value.field) == expected, where
