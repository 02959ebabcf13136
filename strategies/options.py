"""Typed, validated config dataclasses: every field declared once, with its type, default, help text and rules, and
one generic check of all of them. The run config (bench/config.py) and every strategy's config are built with it,
so a value is checked the same way and fails with the same kind of message (field, value, what was expected)
wherever it comes from: a preset, a variant file, a command-line flag or code.

Not a strategy (the registry skips it). It lives here because both sides may import it: bench may import
strategies, strategies may import only models and themselves (tests/test_architecture.py).

    @dataclass(frozen=True)
    class LoraConfig(StrategyOptions):
        r: int = option(8, "rank of the update", min=1)

A field's rules: ``min`` / ``max`` (inclusive), ``above`` / ``below`` (exclusive), ``choices`` (a collection, or a
callable returning one, evaluated when checked), ``keys`` (allowed keys of a dict field, same forms), ``check`` (a
callable returning None or the text of the problem). None passes every rule of a field typed ``X | None``. Rules
across fields are a class's ``check_fields``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

RULES = ("min", "max", "above", "below", "choices", "keys", "check")  # the constraints a field's metadata may declare


class OptionError(ValueError):
    """A value breaks its field's declared type or rules; the message names the field, the value and what was
    expected. Each user of this module raises its own subclass (bench's ConfigError, the registry's StrategyError)."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable | None = None, **rules) -> Any:
    """A config field with its help text and declared constraints (see the module doc), checked by
    ``validate_fields``."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise TypeError(f"option: unknown rule(s) {unknown}; known: {RULES}")
    metadata = {"help": help, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Validated:
    """Base of a validated config dataclass: on construction each field is checked against its type annotation and
    its declared rules (one generic pass, so a new field is checked as soon as it is declared), then
    ``check_fields`` runs the rules that involve several fields. Problems raise ``ERROR`` prefixed by ``SECTION``."""

    SECTION: ClassVar[str] = ""
    ERROR: ClassVar[type[OptionError]] = OptionError

    def __post_init__(self):
        validate_fields(self, self.SECTION, error=self.ERROR)
        self.check_fields()

    def check_fields(self) -> None:
        """Rules across fields; the default has none."""

    def require(self, condition: bool, message: str) -> None:
        """For ``check_fields``: raise this class's error with ``message`` unless ``condition`` holds."""
        if not condition:
            raise self.ERROR(message)


def validate_fields(obj: Any, prefix: str = "", *, error: type[OptionError] = OptionError) -> None:
    """Check every field of a dataclass instance against its annotation and the rules in its metadata.

    Ints are accepted (and stored) as floats where a float is declared, lists as tuples where a tuple is."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        path = f"{prefix}.{f.name}" if prefix else f.name
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise error(f"{path}: expected a {hint.__name__}, got {value!r}")
            continue
        checked = check_type(value, hint, path, error=error)
        if checked is not value:
            object.__setattr__(obj, f.name, checked)
        check_rules(checked, f.metadata, path, error=error)


def check_rules(value: Any, rules: Mapping, path: str, *, error: type[OptionError] = OptionError) -> None:
    """The declared constraints of one field (see ``option``); None satisfies them all."""
    if value is None:
        return
    problem = rule_problem(value, rules)
    if problem is not None:
        raise error(f"{path}: {problem}")


BOUNDS = (("min", lambda v, b: v >= b, ">="), ("max", lambda v, b: v <= b, "<="),
          ("above", lambda v, b: v > b, ">"), ("below", lambda v, b: v < b, "<"))


def rule_problem(value: Any, rules: Mapping) -> str | None:
    """What is wrong with a (non-None) value under these rules, or None."""
    for rule, holds, text in BOUNDS:
        if rule in rules and not holds(value, rules[rule]):
            return f"expected {text} {rules[rule]}, got {value!r}"
    if "choices" in rules and value not in resolve_choices(rules["choices"]):
        return f"expected one of {', '.join(map(repr, resolve_choices(rules['choices'])))}, got {value!r}"
    if "keys" in rules:
        allowed = resolve_choices(rules["keys"])
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            return f"unknown key(s) {unknown}; expected some of {sorted(allowed)}"
    if "check" in rules:
        return rules["check"](value)
    return None


def resolve_choices(choices) -> Sequence:
    """A rule's allowed values: the tuple itself, or what a callable (evaluated when asked) returns."""
    return tuple(choices() if callable(choices) else choices)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin in (tuple, list) or annotation in (tuple, list):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    names = {type(None): "null", int: "an integer", float: "a finite number", str: "a string", bool: "true or false",
             dict: "an object", Any: "any value"}
    return names.get(annotation, names.get(origin, str(annotation)))


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(fits, value as stored) of one non-union annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True, value
    if annotation is type(None):
        return value is None, value
    if annotation is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return number, float(value) if number else value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation in (str, bool):
        return isinstance(value, annotation), value
    if annotation is dict or origin is dict:
        return isinstance(value, dict), value
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_convert(item, args[0]) if args else (True, item) for item in value]
        container = tuple if (origin or annotation) is tuple else list
        return all(ok for ok, _ in items), container(item for _, item in items)
    return isinstance(value, origin or annotation), value


def check_type(value: Any, annotation: Any, path: str, *, error: type[OptionError] = OptionError) -> Any:
    """Check a value against a field annotation (unions, lists / tuples of one type, scalars); returns it as stored."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for option_type in typing.get_args(annotation) if union else (annotation,):
        fits, converted = _convert(value, option_type)
        if fits:
            return converted
    raise error(f"{path}: expected {_type_name(annotation)}, got {value!r}")


def build(cls: type, data: Any, prefix: str = "", *, error: type[OptionError] = OptionError):
    """A (nested) config dataclass from JSON data: unknown keys and wrong types are named with their dotted path."""
    if not isinstance(data, dict):
        raise error(f"{prefix or 'config'}: expected an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise error(f"{prefix or 'config'}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        kwargs[name] = (build(hint, value, path, error=error) if dataclasses.is_dataclass(hint)
                        else check_type(value, hint, path, error=error))
    return cls(**kwargs)


@dataclass(frozen=True)
class FieldDoc:
    """One field as ``--list-strategies --verbose`` shows it: type as declared, default as JSON, help, rules."""

    name: str
    type: str
    default: str
    help: str
    rules: str


def describe(cls: type, values: Mapping | None = None) -> list[FieldDoc]:
    """The documentation of every field of a config dataclass; ``values`` replaces defaults (a variant's values)."""
    values = values or {}
    docs = []
    for f in dataclasses.fields(cls):
        default = values[f.name] if f.name in values else _default(f)
        docs.append(FieldDoc(f.name, f.type if isinstance(f.type, str) else _type_name(f.type),
                             json.dumps(default, default=list), f.metadata.get("help", ""), rules_text(f.metadata)))
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def rules_text(rules: Mapping) -> str:
    """The declared bounds and choices in words (a ``check`` is described by the help text)."""
    parts = [f"{text} {rules[rule]}" for rule, _, text in BOUNDS if rule in rules]
    if "choices" in rules:
        parts.append(f"one of {', '.join(map(repr, resolve_choices(rules['choices'])))}")
    if "keys" in rules:
        parts.append(f"keys among {', '.join(map(repr, resolve_choices(rules['keys'])))}")
    return ", ".join(parts)


def block_indices_problem(layers: tuple[int, ...]) -> str | None:
    """The ``layers`` rule of every strategy that acts on chosen visual blocks: distinct indices >= 0."""
    if layers and len(set(layers)) == len(layers) and min(layers) >= 0:
        return None
    return f"expected distinct block indices >= 0 or null (all), got {layers!r}"
