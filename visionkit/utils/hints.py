"""Type hints as a schema: whether a plain config value fits a hint, the hint in words, and the parameters of a
callable with their hints evaluated (what the config checks use for every `_target_`)."""

from __future__ import annotations

import enum
import inspect
import numbers
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import PurePath
from typing import Any, Literal, Union

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _members(hint: Any) -> list[Any]:
    """The members of a (nested) union, Literal choices merged into one Literal."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    members = [m for a in args for m in _members(a)] if origin in (Union, types.UnionType) else [hint]
    choices = [c for m in members if typing.get_origin(m) is Literal for c in typing.get_args(m)]
    rest = [m for m in members if typing.get_origin(m) is not Literal]
    return ([Literal[tuple(dict.fromkeys(choices))]] if choices else []) + rest


def describe(hint: Any) -> str:
    """What a hint asks for, in words: "an integer or null", "one of min, max", "a list"."""
    members = _members(hint)
    if len(members) > 1:
        return " or ".join(dict.fromkeys(describe(m) for m in members))
    hint = members[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(dict.fromkeys(str(a) for a in args))
    if origin in (list, tuple, Sequence, typing.Sequence):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def fits(value: Any, hint: Any) -> bool:
    """Whether a plain value (from a config: str, int, float, bool, None, list, dict) fits a type hint. Only what
    can be checked is: primitives, Literal, None, lists, mappings, path-like, numbers and enums; any other class
    accepts (the library it belongs to checks it)."""
    if hint in (Any, inspect.Parameter.empty) or isinstance(hint, typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (int, float, bool, str):
        allowed = (int, float) if hint is float else hint
        return isinstance(value, allowed) and (hint is bool or not isinstance(value, bool))
    if origin in (list, tuple, Sequence, typing.Sequence, typing.MutableSequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        element = args[0] if args and (origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)) else Any
        return all(fits(v, element) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    if isinstance(hint, type) and isinstance(value, (str, int, float, bool)):
        if issubclass(hint, (PurePath, os.PathLike)):  # a plain value for a class: only some take one
            return isinstance(value, str)
        if issubclass(hint, numbers.Number):
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return issubclass(hint, enum.Enum)
    return True


@lru_cache(maxsize=256)
def parameters(call: Any) -> tuple[dict[str, Any], bool] | None:
    """({parameter: type hint}, whether it takes **kwargs) of a callable or class; string annotations are
    evaluated where it was defined (Any when they do not evaluate); None when it has no signature."""
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return None
    namespace = vars(sys.modules.get(getattr(call, "__module__", ""), typing))

    def hint(annotation: Any) -> Any:
        if not isinstance(annotation, str):
            return annotation
        try:
            return eval(annotation, namespace)  # the annotations of installed code, never user input
        except Exception:
            return Any

    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {name: hint(p.annotation) for name, p in params.items() if name != "self"}, takes_any
