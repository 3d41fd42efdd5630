"""The machinery every settings section uses: ``Section`` reads typed keys, ``Defaults``
gives a section's defaults, ``load`` turns one TOML file into settings or a ``ConfigError``.

A section's defaults are written once, in its frozen dataclass. Its reader takes
them from there (``d = Defaults(IngestSettings)``, then ``section.integer(
"batch_size", d.batch_size)``) and never writes a second literal; a field without
a default reads as ``REQUIRED``, which ``Section`` reports as "is required".
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secadero.contract import is_valid_id
from secadero.errors import ConfigError

T = TypeVar("T")


class _Required:
    """The default of a key the file must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Defaults:
    """The field defaults of one settings dataclass, read as attributes.

    ``Defaults(IngestSettings).batch_size`` is the dataclass's own default (a
    ``default_factory`` is called); a field without one is ``REQUIRED``. A name
    that is not a field raises ``AttributeError``, so a typo fails the first test.
    """

    def __init__(self, cls: type) -> None:
        self._of = cls.__name__
        self._values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            if item.default is not dataclasses.MISSING:
                self._values[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                self._values[item.name] = item.default_factory()
            else:
                self._values[item.name] = REQUIRED

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"{self.__dict__.get('_of')} has no field {name!r}") from None


class Section:
    """A view of one TOML table that reads typed keys and records problems.

    Reading never raises: a bad or missing key records ``file: key: reason``
    and returns the default, so one pass finds every problem. A default of
    ``REQUIRED`` makes the key required.
    """

    def __init__(self, data: Mapping[str, Any], *, path: str, problems: list[str], file: str,
                 base_dir: Path, env: Mapping[str, str]) -> None:
        self._data = data
        self._path = path
        self._problems = problems
        self._file = file
        self._seen: set[str] = set()
        self.base_dir = base_dir
        self.env = env

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def problem(self, name: str, reason: str) -> None:
        self._problems.append(f"{self._file}: {self.key(name)}: {reason}")

    def refuse(self, name: str, reason: str) -> None:
        """A key this table must not have (moved, or not allowed here): if the file has
        it, say why, instead of a bare "unknown key"."""
        self._seen.add(name)
        if name in self._data:
            self.problem(name, reason)

    def names(self) -> list[str]:
        """The keys the file gives in this table."""
        return list(self._data)

    def has(self, name: str) -> bool:
        return name in self._data

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        self._seen.add(name)
        if name not in self._data:
            if default is REQUIRED:
                self.problem(name, "is required")
                return None
            return default
        value = self._data[name]
        if isinstance(value, bool) and bool not in kinds:
            self.problem(name, f"must be {kind_name}, got a boolean")
            return None if default is REQUIRED else default
        if not isinstance(value, kinds):
            self.problem(name, f"must be {kind_name}, got {type(value).__name__} {value!r}")
            return None if default is REQUIRED else default
        return value

    def string(self, name: str, default: Any = REQUIRED, *,
               choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(name, default, (str,), "a string")
        if value is not None and choices is not None and value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def identifier(self, name: str, default: Any = REQUIRED) -> Any:
        value = self.string(name, default)
        if isinstance(value, str) and not is_valid_id(value):
            self.problem(name, f"{value!r} is not an id: 1-32 of a-z, 0-9 and '-', "
                               "starting with a letter or digit")
        return value

    def number(self, name: str, default: Any = REQUIRED, *, minimum: float | None = None,
               maximum: float | None = None) -> Any:
        value = self._get(name, default, (int, float), "a number")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if minimum is not None and value < minimum:
                self.problem(name, f"must be at least {minimum:g}, got {value:g}")
            if maximum is not None and value > maximum:
                self.problem(name, f"must be at most {maximum:g}, got {value:g}")
            return float(value)
        return value

    def integer(self, name: str, default: Any = REQUIRED, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self._get(name, default, (int,), "an integer")
        if isinstance(value, int):
            if minimum is not None and value < minimum:
                self.problem(name, f"must be at least {minimum}, got {value}")
            if maximum is not None and value > maximum:
                self.problem(name, f"must be at most {maximum}, got {value}")
        return value

    def port(self, name: str, default: Any = REQUIRED) -> Any:
        return self.integer(name, default, minimum=1, maximum=65535)

    def boolean(self, name: str, default: Any = REQUIRED) -> Any:
        return self._get(name, default, (bool,), "true or false")

    def list_of(self, name: str, default: Any, kind_name: str) -> Any:
        """A TOML array, as a list (a tuple default is given back as a list)."""
        if isinstance(default, tuple):
            default = list(default)
        return self._get(name, default, (list,), kind_name)

    def path(self, name: str, default: Any = REQUIRED) -> Path | None:
        """A path; a relative one (from the file or the default) is beside the config file."""
        value = self._get(name, default, (str,), "a string")
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def timezone(self, name: str, default: Any = REQUIRED) -> Any:
        value = self.string(name, default)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            self.problem(name, f"{value!r} is not a tz-database time zone (e.g. America/Lima)")
        return value

    def secret(self, name: str, default: Any = None, *, required: bool = False) -> str | None:
        """A secret from ``<name>_env`` (environment variable) or ``<name>_file``.

        Required when ``default`` is ``REQUIRED`` or ``required`` is true.
        """
        required = required or default is REQUIRED
        self._seen.add(name)
        if name in self._data:
            self.problem(name, f"secrets do not belong in the file: use {name}_env or "
                               f"{name}_file")
        env_name = self._get(f"{name}_env", None, (str,), "a string")
        file_path = self.path(f"{name}_file", None)
        if env_name and file_path:
            self.problem(name, f"give {name}_env or {name}_file, not both")
            return None
        if env_name:
            if env_name not in self.env:
                self.problem(f"{name}_env", f"environment variable {env_name} is not set")
                return None
            return self.env[env_name]
        if file_path:
            try:
                return file_path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(f"{name}_file", f"cannot read {file_path}: {exc.strerror}")
                return None
        if required:
            self.problem(name, f"is required: set {name}_env or {name}_file")
            return None
        return None if default is REQUIRED else default

    def table(self, name: str, *, required: bool = False) -> Section:
        self._seen.add(name)
        raw = self._data.get(name, {})
        if name not in self._data and required:
            self.problem(name, "section is required")
        if not isinstance(raw, dict):
            self.problem(name, "must be a table")
            raw = {}
        return self._child(raw, self.key(name))

    def tables(self, name: str) -> list[Section]:
        """An array of tables (``[[name]]``)."""
        self._seen.add(name)
        raw = self._data.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.problem(name, "must be an array of tables ([[" + name + "]])")
            return []
        return [self._child(item, f"{self.key(name)}[{index}]") for index, item in enumerate(raw)]

    def _child(self, data: Mapping[str, Any], path: str) -> Section:
        return Section(data, path=path, problems=self._problems, file=self._file,
                       base_dir=self.base_dir, env=self.env)

    def finish(self) -> None:
        """Report keys nobody read: almost always a typo that would silently do nothing."""
        for name in self._data:
            if name not in self._seen:
                self.problem(name, "unknown key")


def load(path: Path, reader: Callable[[Section], T], env: Mapping[str, str] | None) -> T:
    """Read ``path`` with ``reader``; raise ``ConfigError`` with every problem found."""
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: invalid TOML: {exc}"]) from exc
    problems: list[str] = []
    root = Section(data, path="", problems=problems, file=file, base_dir=path.parent.resolve(),
                   env=os.environ if env is None else env)
    settings = reader(root)
    root.finish()
    if problems:
        raise ConfigError(problems)
    return settings
