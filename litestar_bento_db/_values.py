"""Validated configuration fields: each field declares its default and its parser once.

A parser takes the raw value (an argument, or the text of an environment variable) and
the name to report, and returns the value or raises :class:`ConfigError` naming what
was wrong. :func:`setting` declares a field that falls back to a ``DB_*`` variable (the
environment's, else the ``.env`` file's: :func:`read_env_file`);
:func:`option` one that does not. :func:`validate_fields` runs the parsers of a
dataclass instance; :func:`render_fields` builds its ``repr``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = [
    "default_of",
    "ConfigError",
    "Parser",
    "boolean",
    "callable_value",
    "choice",
    "env_name",
    "integer",
    "items",
    "label",
    "name",
    "number",
    "option",
    "optional",
    "parse_field",
    "read_env_file",
    "readable_file",
    "render_fields",
    "safe_fields",
    "setting",
    "validate_fields",
]

T = TypeVar("T")

Parser = Callable[[Any, str], Any]
"""``parse(value, name) -> value``; raises :class:`ConfigError`."""

ENV_PREFIX: Final = "DB_"
#: the variable naming another file than ``./.env``
ENV_FILE_VARIABLE: Final = "DB_ENV_FILE"
#: the file read when ``DB_ENV_FILE`` is unset, if it exists
DEFAULT_ENV_FILE: Final = ".env"
_PARSE: Final = "parse"
_ENV: Final = "env"
_MASK: Final = "mask"


class ConfigError(ValueError):
    """Invalid configuration; the message names the field or variable."""


def integer(minimum: int) -> Parser:
    """An integer ``>= minimum`` (text is accepted, booleans are not)."""
    expected = f"expected an integer >= {minimum}"

    def parse(value: Any, field_name: str) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"{field_name}: {expected}, got {value!r}")
        try:
            number = int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{field_name}: {expected}, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{field_name}: {expected}, got {number}")
        return number

    return parse


def number(minimum: float, *, inclusive: bool = True) -> Parser:
    """A finite number ``>= minimum`` (``> minimum`` when not ``inclusive``)."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def parse(value: Any, field_name: str) -> float:
        if isinstance(value, bool):
            raise ConfigError(f"{field_name}: expected a number {bound}, got {value!r}")
        try:
            result = float(value) if isinstance(value, int | float) else float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{field_name}: expected a number {bound}, got {value!r}") from None
        if not math.isfinite(result):
            raise ConfigError(f"{field_name}: expected a finite number {bound}, got {value!r}")
        if result < minimum or (not inclusive and result == minimum):
            raise ConfigError(f"{field_name}: expected a number {bound}, got {result:g}")
        return result

    return parse


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def boolean(value: Any, field_name: str) -> bool:
    """``True``/``False``, or their text forms (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{field_name}: expected true/false (or 1/0, yes/no, on/off), got {value!r}")


def printable(what: str, longest: int) -> Parser:
    """Printable text of 1 to ``longest`` characters, surrounding blanks stripped."""

    def parse_printable(value: Any, field_name: str) -> str:
        text = value.strip() if isinstance(value, str) else None
        if not text or len(text) > longest or not text.isprintable():
            raise ConfigError(
                f"{field_name}: expected a printable {what} of 1 to {longest} characters"
            )
        return text

    return parse_printable


name = printable("name", 63)
"""A name of at most 63 characters (PostgreSQL's identifier limit)."""
label = printable("label", 200)
"""A label of at most 200 characters (a metric attribute)."""


def choice(values: tuple[str, ...]) -> Parser:
    """One of ``values`` (text, compared without surrounding blanks)."""

    def parse_choice(value: Any, field_name: str) -> str:
        text = value.strip() if isinstance(value, str) else None
        if text not in values:
            raise ConfigError(f"{field_name}: expected one of {', '.join(values)}, got {value!r}")
        return text

    return parse_choice


def readable_file(value: Any, field_name: str) -> str:
    """The path of a file that exists and can be read (its content is not read here)."""
    path = value.strip() if isinstance(value, str) else None
    if not path:
        raise ConfigError(f"{field_name}: expected the path of a file")
    if not os.path.isfile(path):
        raise ConfigError(f"{field_name}: no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{field_name}: the file cannot be read: {path}")
    return path


def callable_value(value: Any, field_name: str) -> Any:
    """A callable (a function, or an object with ``__call__``)."""
    if not callable(value):
        raise ConfigError(f"{field_name}: expected a callable, got {type(value).__name__}")
    return value


def optional(parse: Parser) -> Parser:
    """``parse``, or ``None`` for ``None`` or empty text."""

    def parse_optional(value: Any, field_name: str) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse(value, field_name)

    return parse_optional


def items(parse: Parser, separator: str = ",") -> Parser:
    """A tuple of values, each checked by ``parse``; text is split on ``separator`` (a regex)."""

    def parse_items(value: Any, field_name: str) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in re.split(separator, value)) if part]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{field_name}: expected a list (or comma-separated text)")
        return tuple(parse(item, f"{field_name}[{index}]") for index, item in enumerate(value))

    return parse_items


def default_of(cls: type, field_name: str) -> Any:
    """The default of a field of a dataclass made with :func:`setting` or :func:`option`."""
    found = next(one for one in dataclasses.fields(cls) if one.name == field_name)
    env = found.metadata.get(_ENV)
    return env[0] if env is not None else found.default


def env_name(field_name: str) -> str:
    """The environment variable of a field: ``DB_<FIELD>``."""
    return f"{ENV_PREFIX}{field_name.upper()}"


class _Unset:
    """Marks a field not given to the constructor (to be read from the environment)."""

    def __repr__(self) -> str:
        return "<from environment>"


_UNSET: Final = _Unset()


def setting(
    default: T,
    parse: Parser,
    *,
    fallback_env: str | None = None,
    mask: Callable[[Any], Any] | None = None,
) -> T:
    """A field read from ``DB_<FIELD>`` (or ``fallback_env``) when not given explicitly.

    Args:
        default: The value when neither an argument nor a variable gives one.
        parse: Validates and converts the value.
        fallback_env: A variable consulted when ``DB_<FIELD>`` is unset.
        mask: The value with its secrets masked, for any output (``safe_fields``).
    """
    metadata = {_PARSE: parse, _ENV: (default, fallback_env), _MASK: mask}
    return dataclasses.field(default=_UNSET, metadata=metadata)  # type: ignore[return-value]


def read_env_file() -> tuple[dict[str, str], str | None]:
    """The ``.env`` file's ``DB_*`` and ``DATABASE_URL`` variables, and its path.

    The file is ``./.env``, or the one ``DB_ENV_FILE`` names (then it must exist),
    parsed by python-dotenv (quotes, ``export``, comments, ``${VAR}``).

    Returns:
        ``({}, None)`` when ``DB_ENV_FILE`` is unset and there is no ``./.env``.

    Raises:
        ConfigError: ``DB_ENV_FILE`` names no readable file.
    """
    path = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if not path:
        if not os.path.isfile(DEFAULT_ENV_FILE):
            return {}, None
        path = DEFAULT_ENV_FILE
    elif not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError(f"{ENV_FILE_VARIABLE}: no readable file at {path}")
    from dotenv import dotenv_values  # only when there is a file to read

    return {
        name: value
        for name, value in dotenv_values(path, encoding="utf-8").items()
        if value is not None and (name.startswith(ENV_PREFIX) or name == "DATABASE_URL")
    }, path


def _from_environment(
    field: dataclasses.Field[Any], env_file: tuple[dict[str, str], str | None]
) -> tuple[Any, str]:
    """A setting's value and the name to report.

    Its variable's (the environment's, else the env file's: ``NAME in <file>``), else
    the default's.
    """
    default, fallback = field.metadata[_ENV]
    variables = [variable for variable in (env_name(field.name), fallback) if variable]
    file_values, file_path = env_file
    for source, suffix in ((os.environ, ""), (file_values, f" in {file_path}")):
        for variable in variables:
            raw = source.get(variable, "")
            if raw.strip():
                return raw, f"{variable}{suffix}"
    return default, field.name


def option(default: T, parse: Parser) -> T:
    """A validated field with a plain default (no environment variable)."""
    if isinstance(default, list | dict | set):
        raise TypeError("mutable defaults need a factory")
    return dataclasses.field(default=default, metadata={_PARSE: parse})


def validate_fields(instance: Any) -> None:
    """Run each field's parser on its value (frozen dataclasses included).

    A :func:`setting` not given explicitly is read from its variable first; errors then
    name the variable (and the ``.env`` file it came from).
    """
    env_file: tuple[dict[str, str], str | None] | None = None
    for field in dataclasses.fields(instance):
        parse = field.metadata.get(_PARSE)
        if parse is None:
            continue
        value, reported = getattr(instance, field.name), field.name
        if value is _UNSET:
            if env_file is None:
                env_file = read_env_file()
            value, reported = _from_environment(field, env_file)
        object.__setattr__(instance, field.name, parse(value, reported))


def parse_field(instance: Any, field_name: str, value: Any, reported: str) -> Any:
    """``value`` checked by the parser of ``instance``'s field ``field_name``.

    For a value from another source than the field's argument or variable (a URL key);
    errors name ``reported``.
    """
    field = next(f for f in dataclasses.fields(instance) if f.name == field_name)
    return field.metadata[_PARSE](value, reported)


def safe_fields(instance: Any) -> dict[str, Any]:
    """The fields and their values, secrets masked (each field's ``mask``)."""
    values = {}
    for field in dataclasses.fields(instance):
        mask = field.metadata.get(_MASK)
        value = getattr(instance, field.name)
        values[field.name] = mask(value) if mask is not None else value
    return values


def render_fields(instance: Any) -> str:
    """``ClassName(field=value, ...)``, secrets masked."""
    parts = [f"{name}={value!r}" for name, value in safe_fields(instance).items()]
    return f"{type(instance).__name__}({', '.join(parts)})"
