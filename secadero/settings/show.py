"""The effective settings of a file, secrets redacted: ``secadero check-config --show``.

What a setting resolves to (defaults filled in, relative paths made absolute,
secrets read from the environment or their files) is what an operator needs
to see when something behaves unexpectedly; the secrets themselves must not
land in a terminal's scrollback, a ticket or a chat. A secret is a field
declared ``field(repr=False)`` (every ``*_env`` / ``*_file`` secret of the
settings is one): shown as ``"***"`` when set, ``null`` when not. A URL's
``user:password@`` keeps the user and loses the password wherever it appears.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from enum import Enum
from pathlib import Path
from typing import Any

from secadero.settings.notifiers import NotifierSettings

REDACTED = "***"


def redact_url(text: str) -> str:
    """``text`` with the password of a ``scheme://user:password@host`` URL replaced by
    ``***``; anything else unchanged."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parsed = urllib.parse.urlsplit(text)
        password = parsed.password
    except ValueError:
        return text
    if password is None:
        return text
    userinfo, _, host = parsed.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{user}:{REDACTED}@{host}"))


def effective(value: Any) -> Any:
    """Settings (frozen dataclasses) as plain JSON-ready data, secrets redacted."""
    if isinstance(value, NotifierSettings):
        # ``configured`` pairs (provider, its settings): shown as the file's sections.
        shown = {name: effective(settings) for name, settings in value.configured}
        return {**shown, **{item.name: effective(getattr(value, item.name))
                            for item in dataclasses.fields(value) if item.name != "configured"}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shown: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            field_value = getattr(value, item.name)
            if not item.repr:
                shown[item.name] = None if field_value is None else REDACTED
            else:
                shown[item.name] = effective(field_value)
        return shown
    if isinstance(value, dict):
        return {str(k): effective(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [effective(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return redact_url(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)
