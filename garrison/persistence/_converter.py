"""The one cattrs converter of garrison: Python values <-> durable JSON text.

Everything that crosses into durable storage passes through here: builtins
(``dict`` with ``str`` keys, ``list``, ``tuple``, ``str``, ``int``, ``float``,
``bool``, ``None``), attrs classes, dataclasses, enums, ``datetime`` (ISO 8601:
an aware one normalised to UTC, a naive one kept naive, its fields as given),
``uuid.UUID`` and ``Pid`` (as ``str(pid)``). Never pickle. Anything else (sets,
bytes, arbitrary objects, functions, dicts with non-``str`` keys) raises
:class:`~garrison.PayloadError` naming its type and what it was, at the call that
passed it. A dict whose declared type gives its keys another type (``dict[int,
Order]``: an attrs field's, or the hint :func:`to_json` is given) is stored with each
key as its JSON text, and restored by it.

Typed values come back from type hints: ``from_json(text, Order)`` rebuilds an
attrs ``Order``; without a hint (``Any``) the plain JSON shape is returned, so
tuples come back as lists unless the hint says ``tuple``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import functools
import json
import re
import sys
import types
import typing
import uuid
from collections import deque
from collections.abc import (
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    MutableSequence,
    MutableSet,
    Sequence,
)
from collections.abc import Set as AbstractSet
from typing import (
    Annotated,
    Any,
    Literal,
    NewType,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import attrs
import cattrs
import cattrs.v
from cattrs.cols import (
    is_mapping,
    is_namedtuple,
    mapping_structure_factory,
    namedtuple_structure_factory,
)
from cattrs.errors import (
    BaseValidationError,
    IterableValidationError,
    IterableValidationNote,
    StructureHandlerNotFoundError,
)

from .._errors import PayloadError
from .._targets import main_module_name
from ..actors._values import ErrorInfo, Pid

__all__ = ["LEAF_TEXT", "RawJson", "from_json", "not_durable", "structure", "to_json",
           "type_name", "unstructure"]

_UTC = _dt.UTC


@attrs.frozen
class RawJson:
    """JSON text that is already encoded; stored verbatim by the store.

    Lets a caller that already ran :func:`to_json` (for example to hand the
    workflow exactly what a replay will see) avoid a second encoding.
    """

    text: str


class _Unconvertible(Exception):
    """Internal: carries the offending value out of the unstructure walk."""

    def __init__(self, value: object, reason: str = "") -> None:
        super().__init__(reason)
        self.value = value
        self.reason = reason


def _type_name(value: object) -> str:
    return type_name(type(value))


#: ``__main__.`` where a repr names a class of the script (``list[__main__.Order]``)
_IN_MAIN = re.compile(r"\b__main__\.")


def type_name(hint: Any) -> str:
    """``hint`` as the code names it: ``str``, ``list[int]``, ``app.orders.Receipt``. A
    class of the script this process runs (its module is ``__main__``) is named by the
    script's module name (``python app.py``, ``python -m app``: ``app.Order``), as its
    workflows are (``app:place``) and as a process that imports it names it: a message
    names the one module once, and alike however the script was run."""
    if isinstance(hint, type) and not get_args(hint):
        module = hint.__module__
        if module in ("builtins", None):
            return hint.__qualname__
        if module == "__main__":
            module = main_module_name() or module
        return f"{module}.{hint.__qualname__}"
    return _script_named(repr(hint).replace("typing.", ""))


def _script_named(text: str) -> str:
    """``text`` (a type's repr) with ``__main__.`` as the script's module name."""
    script = main_module_name() if "__main__." in text else None
    return text if script is None else _IN_MAIN.sub(f"{script}.", text)


def _unstructure_datetime(value: _dt.datetime) -> str:
    if value.utcoffset() is None:  # naive: its own fields, read back as they were
        # (a tzinfo that gives no offset is naive to Python too, compared as such)
        return value.replace(tzinfo=None).isoformat()
    try:
        return value.astimezone(_UTC).isoformat()
    except OverflowError:  # (datetime.min at +14:00): named, with where it is
        raise _Unconvertible(value, f"{value.isoformat()} is a time before year 1 or after "
                             "9999 in UTC, where an aware datetime is stored, and no "
                             "datetime holds it") from None


def _structure_datetime(value: Any, _type: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        result = value
    elif isinstance(value, str):
        result = _dt.datetime.fromisoformat(value)
    else:
        raise ValueError(f"expected an ISO 8601 string for a datetime, got {value!r}")
    return result if result.utcoffset() is None else result.astimezone(_UTC)


def _structure_pid(value: Any, _type: Any) -> Pid:
    if isinstance(value, Pid):
        return value
    try:
        return Pid.parse(value)
    except ValueError:  # (an attrs class, but stored as its text: not from its fields)
        raise _mismatch("a pid as its 'host/id' text", value) from None


def _structure_uuid(value: Any, _type: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a UUID string, got {value!r}")
    return uuid.UUID(value)


#: the JSON names of the types a value of JSON may have (in a mismatch's message)
_JSON_KINDS: dict[type, str] = {str: "a string", bool: "a boolean", int: "an integer",
                                float: "a number", dict: "an object", list: "an array",
                                type(None): "null"}


class _ScalarMismatch(TypeError):
    """A JSON value of the wrong type for ``str``, ``int``, ``float`` or ``bool`` (or
    for a ``Pid``, stored as its ``host/id`` text; a fixed tuple, as an array)."""


def _mismatch(expected: str, value: object) -> TypeError:
    """A JSON value of the wrong type for a scalar hint: names both types."""
    if value is None:
        return _ScalarMismatch(f"expected {expected}, got null")
    kind = _JSON_KINDS.get(type(value), f"a {_type_name(value)}")
    shown = json.dumps(value, default=repr)
    return _ScalarMismatch(f"expected {expected}, got {kind} "
                           f"{shown[:80]}{'...' if len(shown) > 80 else ''}")


def _structure_str(value: Any, _type: Any) -> str:
    # (cattrs' own hook is str(value): {"a": 1} became "{'a': 1}", None "None")
    if not isinstance(value, str):
        raise _mismatch("a string", value)
    return value if _type is str else _type(value)  # (a subclass: an enum, a NewType's)


def _structure_int(value: Any, _type: Any) -> int:
    # (cattrs' own hook is int(value): "5" became 5, 5.5 became 5; a boolean is an int
    # to Python and to type checkers, so true is still 1, as it was)
    if not isinstance(value, int):
        raise _mismatch("an integer", value)
    return int(value) if _type is int else _type(value)


def _structure_float(value: Any, _type: Any) -> float:
    if not isinstance(value, (int, float)):  # (an integer, a boolean too, as before)
        raise _mismatch("a number", value)
    return float(value) if _type is float else _type(value)


def _structure_bool(value: Any, _type: Any) -> bool:
    # (cattrs' own hook is bool(value): "false" became True, 0 False)
    if not isinstance(value, bool):
        raise _mismatch("a boolean (true or false)", value)
    return value if _type is bool else _type(value)


class _LengthMismatch(ValueError):
    """A JSON array of another length than the tuple of fixed length it restores."""


def _fixed_tuple(hint: Any) -> bool:
    """``tuple[int, str]``: a tuple of so many values, each of its own type (not
    ``tuple[int, ...]``, nor ``tuple[()]``)."""
    if get_origin(hint) is not tuple:
        return False
    members = get_args(hint)
    return bool(members) and members[-1] is not Ellipsis


#: the containers restored from a JSON array, by the hint's class (or its origin's):
#: what each gives (an abstract one gives what cattrs gave for it)
_ARRAYS: dict[Any, Callable[[list[Any]], Any]] = {
    list: list, tuple: tuple, set: set, frozenset: frozenset, deque: deque,
    Sequence: tuple, MutableSequence: list, AbstractSet: frozenset, MutableSet: set}


def _array_hint(hint: Any) -> bool:
    """``list[str]``, ``tuple[int, ...]``, ``set[Pid]``, ``Sequence[T]`` (or the bare
    classes): a container of any number of values of one type, from a JSON array (not a
    fixed tuple, nor ``tuple[()]``)."""
    origin = get_origin(hint)
    if origin is None:
        return hint in _ARRAYS
    args = get_args(hint)
    if origin is tuple:  # (``tuple[()]``, no arguments, is no array of values; the
        # bare ``typing.Tuple``, no arguments either, is any tuple)
        return hint is typing.Tuple or (bool(args) and args[-1] is Ellipsis)  # noqa: UP006
    return origin in _ARRAYS


def _array_structure_hook(hint: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Restoring a container of :func:`_array_hint`: only from an array (cattrs' own
    took any iterable: a string's characters, an object's keys), each value by its type,
    each problem named by its index."""
    make = _ARRAYS[get_origin(hint) or hint]
    args = get_args(hint)
    member = args[0] if args else Any
    handler = None if member in (Any, object) else conv.get_structure_hook(member)

    def restore(value: Any, _hint: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _mismatch("an array", value)
        if handler is None:
            return make(list(value))
        return make(_restore_each(hint, ((member, item) for item in value), handler))

    return restore


def _restore_each(hint: Any, items: Iterable[tuple[Any, Any]],
                  restore: Callable[[Any, Any], Any]) -> list[Any]:
    """Each ``(type, value)`` of ``items`` (the values of an array restored as
    ``hint``) restored by ``restore(value, type)``; the problems of all of them raised
    together, each named by its index (as cattrs' own are)."""
    errors: list[Exception] = []
    out = []
    for i, (member, item) in enumerate(items):
        try:
            out.append(restore(item, member))
        except Exception as exc:
            exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(
                f"Structuring {hint} @ index {i}", i, member)]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {hint!r}", errors, hint)
    return out


def _no_value_restored(_value: Any, hint: Any) -> Any:
    """``bytes``, ``memoryview``: no JSON value is one (a store refuses them), where
    cattrs' own made ``5`` five zero bytes and a list of numbers those bytes."""
    raise StructureHandlerNotFoundError(f"no value is restored as {hint.__name__}", hint)


def _structure_fixed_tuple(value: Any, hint: Any) -> tuple[Any, ...]:
    """cattrs' restoring of a tuple of fixed length, but one of another length says the
    two lengths (cattrs' says ``invalid value``)."""
    members = get_args(hint)
    if not isinstance(value, list | tuple):  # (not a string's characters, an object's keys)
        raise _mismatch(f"an array of {len(members)} values "
                        f"({', '.join(map(_hint_name, members))})", value)
    if len(value) != len(members):
        shown = json.dumps(value, default=repr)
        raise _LengthMismatch(
            f"expected {len(members)} values ({', '.join(map(_hint_name, members))}), got "
            f"{len(value)}: {shown[:80]}{'...' if len(shown) > 80 else ''}")
    return tuple(_restore_each(hint, zip(members, value, strict=True),
                               _converter.structure))


#: the scalar types a union may hold, a boolean's first (``True`` is an ``int`` too)
_UNION_SCALARS = (bool, int, float, str)


def _scalar_union(hint: Any) -> bool:
    """True for a union of two types or more (``None`` aside) of which one is a scalar
    (``int | str``, ``float | list[int] | None``), which cattrs does not restore (an
    ``X | None``, a union of records told apart by their fields, it does)."""
    if get_origin(hint) not in (Union, types.UnionType):
        return False
    members = [a for a in get_args(hint) if a is not type(None)]
    return len(members) > 1 and any(a in _UNION_SCALARS for a in members)


def _structure_union(value: Any, hint: Any) -> Any:
    """A JSON value as the first member of the union ``hint`` that takes it: a scalar
    member of exactly its JSON type (``true`` a ``bool``, ``5`` an ``int``; an integer
    a ``float`` where the union has no ``int``), else each other member in order."""
    members = get_args(hint)
    if value is None:
        if type(None) in members:
            return None
    else:
        kind = type(value)
        if kind in _UNION_SCALARS and kind in members:
            return value
        if kind is int and float in members:
            return float(value)
        for member in members:
            if member in _UNION_SCALARS or member is type(None):
                continue
            try:
                return _converter.structure(value, member)
            except Exception:  # (the next member may take it)
                continue
    names = [_JSON_KINDS.get(m) or _hint_name(m) for m in members]
    raise _mismatch(" or ".join(names), value)


def _valued_by_containers(hint: Any) -> bool:
    """An enum with a member whose value is a tuple, a list or a dict (``S = (1,
    "small")``): its JSON form is an array or an object, which the enum's own lookup
    by value (``Size([1, "small"])``) does not find."""
    return (isinstance(hint, type) and issubclass(hint, enum.Enum)
            and any(isinstance(m.value, tuple | list | dict) for m in hint))


def _enum_by_json_form(hint: Any) -> Callable[[Any, Any], Any]:
    """Restoring an enum of :func:`_valued_by_containers`: a JSON array or object is
    the member whose value has that JSON form (``[1, "small"]``: ``Size.S``); any other
    value is looked up by the enum, as cattrs does."""
    forms = []
    for member in hint:
        try:
            forms.append((json.loads(json.dumps(member.value)), member))
        except (TypeError, ValueError):  # (no JSON form: none is stored, none restored)
            continue

    def structure_enum(value: Any, _type: Any) -> Any:
        if isinstance(value, list | dict):
            for form, member in forms:
                if form == value:
                    return member
        return hint(value)
    return structure_enum


def _namedtuple_structure_hook(hint: Any) -> Callable[[Any, Any], Any]:
    """Restoring a ``typing.NamedTuple`` from its JSON array, its fields' types resolved
    in its module as a dataclass's are: cattrs' own takes its annotations as they are,
    strings under ``from __future__ import annotations``, and had no hook for them
    (``Unsupported type: ForwardRef('int')``)."""
    try:
        hints = get_type_hints(hint)
    except Exception:  # (a name it cannot resolve: cattrs says which)
        return namedtuple_structure_factory(hint, _converter)
    members: Any = tuple[tuple(hints.get(name, Any) for name in hint._fields)]  # type: ignore[misc]
    base = _converter.get_structure_hook(members)
    return lambda value, _type: hint(*base(value, members))


def _reject(value: object) -> Any:
    raise _Unconvertible(value)


def _unstructure_dict(value: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        out[key if type(key) is str else _str_key(key)] = _converter.unstructure(item)
    return out


def _str_key(key: Any) -> str:
    """A key of a dict whose keys are not declared of another type: a ``str`` (a str
    subclass such as a StrEnum member as its text); any other is refused."""
    if isinstance(key, str):
        return str.__str__(key)
    raise _Unconvertible(key, "JSON object keys must be str")


def _unstructure_seq(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    unstructure = _converter.unstructure
    return [unstructure(item) for item in value]


#: key types whose JSON form is a string other than ``str`` (a key of one is stored as
#: that string, and cattrs restores it from it)
_TEXT_FORMED = (uuid.UUID, _dt.datetime, Pid)
_NUMBERS = (int, float, bool, type(None))


def _bare(key_type: Any) -> Any:
    """``key_type`` without ``Annotated[...]`` and ``NewType`` around it."""
    while True:
        if isinstance(key_type, NewType):
            key_type = key_type.__supertype__
        elif get_origin(key_type) is Annotated:
            key_type = get_args(key_type)[0]
        else:
            return key_type


def _number_keyed(key_type: Any) -> bool:
    """A dict key of type ``key_type`` has a JSON number, boolean or null as its form
    (``int``, ``float``, ``bool``, an enum of such values, a ``Literal`` of them, a
    union of only such types): stored as that JSON text (``"1"``), and read back by
    parsing it. A union with a text type among its members (``str | int``,
    ``Optional[str]``) is none: ``"1"`` could be either."""
    key_type = _bare(key_type)
    origin = get_origin(key_type)
    if origin in (Union, types.UnionType):
        return all(_number_keyed(a) for a in get_args(key_type))
    if origin is Literal:
        return all(type(a) in _NUMBERS for a in get_args(key_type))
    if not isinstance(key_type, type) or issubclass(key_type, str):
        return False
    if issubclass(key_type, enum.Enum):
        return all(type(m.value) in _NUMBERS for m in key_type)
    return issubclass(key_type, _NUMBERS)


def _converted_key(key_type: Any) -> bool:
    """A dict declared with keys of ``key_type`` is stored with each key as its JSON
    text (:func:`_key_text`): number-like keys (:func:`_number_keyed`), and those whose
    JSON form is a string other than a ``str`` (``UUID``, ``datetime``, ``Pid``, an
    enum of ``str`` values). Others (``str``, ``Any``, a union with ``str``) take
    ``str`` keys only, as a dict without a declared type does."""
    if _number_keyed(key_type):
        return True
    key_type = _bare(key_type)
    if not isinstance(key_type, type) or issubclass(key_type, str):
        return False
    if issubclass(key_type, enum.Enum):
        return all(type(m.value) is str for m in key_type)
    return issubclass(key_type, _TEXT_FORMED)


@functools.lru_cache(maxsize=1024)
def declares_keys(hint: Any) -> bool:
    """``hint`` declares a dict whose keys are not all strings (``dict[int, Order]``,
    ``list[dict[uuid.UUID, int]]``, ``dict[int, str] | None``): a value of it is stored
    by :func:`to_json` given the hint, each key as its JSON text. A value without such
    a declaration (``dict``, ``Any``) takes ``str`` keys only: JSON object keys are
    strings, and nothing would say what to restore them as."""
    try:
        args = get_args(hint)
        if is_mapping(hint):
            return len(args) == 2 and (_converted_key(args[0]) or declares_keys(args[1]))
        origin = get_origin(hint)
        if origin in (Union, types.UnionType) or (
                isinstance(origin, type) and issubclass(origin, Sequence)
                and not issubclass(origin, str)):
            return any(declares_keys(a) for a in args if a is not Ellipsis)
    except TypeError:  # (an odd hint, or one holding an unhashable one: none declared)
        return False
    return False


def _key_text(key: Any) -> str:
    """A key of a dict declared with non-``str`` keys as a JSON object's key: the JSON
    text of its value (``1`` as ``"1"``, an enum by its value's, a UUID as its string);
    one whose JSON form is no string or number (a tuple) is refused."""
    if type(key) is str:
        return key
    plain = _converter.unstructure(key)
    if isinstance(plain, str):
        return str.__str__(plain)
    if isinstance(plain, (int, float)) or plain is None:  # (a bool too)
        return json.dumps(plain)
    raise _Unconvertible(key, "a dict key must have a string or a number as its JSON "
                              f"form (a {_type_name(plain)} here)")


def _unstructure_declared(value: Any, hint: Any) -> Any:
    """``value``'s JSON shape where ``hint`` declares a dict of non-``str`` keys
    (:func:`declares_keys`: through lists, tuples and unions to it); every other value
    by its own type, as :func:`unstructure` does."""
    if not declares_keys(hint):
        return _converter.unstructure(value)
    if is_mapping(hint):
        return _unstructure_keyed(value, hint)
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None or len(members) != 1:  # (a union of two: by the value's type)
            return _converter.unstructure(value)
        return _unstructure_declared(value, members[0])
    if not isinstance(value, list | tuple):
        return _converter.unstructure(value)
    if _fixed_tuple(hint):
        return [_unstructure_declared(item, args[i] if i < len(args) else Any)
                for i, item in enumerate(value)]
    return [_unstructure_declared(item, args[0] if args else Any) for item in value]


def _unstructure_keyed(value: Any, hint: Any) -> Any:
    """A dict declared ``dict[K, V]`` (:func:`declares_keys`): its keys as JSON text
    (:func:`_key_text`), its values as ``V`` declares them; a value that is no dict by
    its own type."""
    if not isinstance(value, dict):
        return _converter.unstructure(value)
    key_type, item_type = get_args(hint)
    # (``dict[str, dict[int, X]]``: its own keys are str keys, as ever)
    key_of = _key_text if _converted_key(key_type) else _str_key
    return {key_of(key): _unstructure_declared(item, item_type)
            for key, item in value.items()}


def _parsed_key(text: str) -> Any:
    """The JSON value a key of a dict of non-``str`` keys stands for (``"1"``: 1), or
    the key itself when it is no JSON number, boolean or null (the key type's hook then
    says what it expected)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, str | list | dict) else value


def _keyed_structure_hook(hint: Any) -> Callable[[Any, Any], Any]:
    """cattrs' restoring of a ``dict[K, V]`` whose keys are JSON text of numbers (``K``:
    ``int``, ``float``, ``bool``, an ``IntEnum``...: :func:`_key_text`), each key first
    read back as the number it stands for."""
    origin = get_origin(hint) or hint
    structure_to = dict if origin in (Mapping, MutableMapping) else origin
    base = mapping_structure_factory(hint, _converter, structure_to)

    def structure_keyed(value: Any, _type: Any) -> Any:
        if isinstance(value, dict):
            value = {_parsed_key(k) if type(k) is str else k: item
                     for k, item in value.items()}
        return base(value, _type)
    return structure_keyed


def _keys_in_text(hint: Any) -> bool:
    """A mapping hint whose keys are stored as the JSON text of non-strings."""
    if not is_mapping(hint):
        return False
    args = get_args(hint)
    return len(args) == 2 and _number_keyed(args[0])


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # Leaves that need a JSON form.
    conv.register_unstructure_hook(Pid, str)
    conv.register_structure_hook(Pid, _structure_pid)
    conv.register_unstructure_hook(_dt.datetime, _unstructure_datetime)
    conv.register_structure_hook(_dt.datetime, _structure_datetime)
    conv.register_unstructure_hook(uuid.UUID, str)
    conv.register_structure_hook(uuid.UUID, _structure_uuid)
    # An error's texts are what it says, not a value: a surrogate pair in them (an
    # exception's message quoting text decoded with 'surrogatepass') is stored as the
    # one character it stands for, as JSON reads it back, and does not refuse the error
    error_hook = conv.get_unstructure_hook(ErrorInfo)
    conv.register_unstructure_hook(ErrorInfo, lambda error: {
        key: _joined_pairs(text) for key, text in error_hook(error).items()})
    # Scalars: a JSON value of exactly that type (an integer for a float), no coercion
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    # ``-> object`` / ``list[object]`` mean "any JSON value", like ``Any``
    conv.register_structure_hook_func(lambda t: t is object, lambda value, _type: value)
    # ``int | str``: by the value's JSON type (cattrs restores no union with a scalar)
    conv.register_structure_hook_func(_scalar_union, _structure_union)
    conv.register_structure_hook_factory(_array_hint, _array_structure_hook)
    conv.register_structure_hook_func(_fixed_tuple, _structure_fixed_tuple)
    for unrestored in (bytes, memoryview):  # (a class's own hook, as cattrs' is)
        conv.register_structure_hook(unrestored, _no_value_restored)
    conv.register_structure_hook_factory(is_namedtuple, _namedtuple_structure_hook)
    # An enum of tuple values (``S = (1, "small")``), stored as its JSON array
    conv.register_structure_hook_factory(_valued_by_containers, _enum_by_json_form)
    # Containers: walk them ourselves so every nested value is checked by its
    # runtime type (cattrs would pass unknown objects through untouched).
    conv.register_unstructure_hook(dict, _unstructure_dict)
    conv.register_unstructure_hook(list, _unstructure_seq)
    conv.register_unstructure_hook(tuple, _unstructure_seq)
    # A dict declared with non-str keys (an attrs field's, or the hint to_json is given):
    # its keys as JSON text, read back as the numbers they stand for
    conv.register_unstructure_hook_factory(
        lambda t: is_mapping(t) and declares_keys(t),
        lambda t: functools.partial(_unstructure_keyed, hint=t))
    conv.register_structure_hook_factory(_keys_in_text, _keyed_structure_hook)
    # Values whose JSON form would not come back as what went in.
    for rejected in (set, frozenset, bytes, bytearray, memoryview, complex):
        conv.register_unstructure_hook(rejected, _reject)
    return conv


_converter = _make_converter()


def not_durable(cls: type, reason: str) -> None:
    """Refuse instances of ``cls``, an object that lives only in a running node (a
    workflow's handle), with ``reason``, which says what to store instead: without
    this, an attrs class among them is converted as a record, field by field, and
    fails on a field that is no value (a node) with an error about that field's type.
    Its subclasses are refused too (``garrison.testing``'s handle is one)."""
    def refuse(value: object) -> Any:
        raise _Unconvertible(value, reason)

    def of_cls(t: Any) -> bool:  # (its subclasses too: the testing kit's env handle)
        return isinstance(t, type) and issubclass(t, cls)

    # (by a test of the type: given the class, cattrs resolves its annotations first)
    _converter.register_unstructure_hook_func(of_cls, refuse)
_LEAVES = (str, int, float, bool, type(None))

#: a surrogate pair as JSON text writes it, a high ``\udXXX`` escape then a low one
#: (its backslash not itself escaped: ``\\ud83d`` is a backslash, then text)
_PAIR_ESCAPES = re.compile(r"(?<!\\)(?:\\\\)*\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}",
                           re.IGNORECASE)
#: a surrogate pair held as two code points (what ``surrogatepass`` decoding gives)
_SPLIT_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_encode_str = json.encoder.encode_basestring_ascii


class _SplitPairError(ValueError):
    """A ``str`` leaf holds a surrogate ``pair`` as two code points (a ``ValueError``,
    as an int too long for text is: a caller of :data:`LEAF_TEXT` asks
    :func:`to_json`, which names it)."""

    def __init__(self, pair: str) -> None:
        super().__init__(pair)
        self.pair = pair


def _str_text(value: str) -> str:
    """``value``'s JSON text; :class:`_SplitPairError` if it holds a surrogate pair as
    two code points. JSON text writes a character beyond the BMP (an emoji) as the two
    escapes of its pair, and reading them back joins them into that one character: two
    code points stored so would come back as one. Only text with a ``\\ud`` escape
    (a C-speed test) has its code points searched."""
    text = _encode_str(value)
    if "\\ud" in text:
        found = _SPLIT_PAIR.search(value)
        if found is not None:
            raise _SplitPairError(found.group())
    return text


def _split_pair(text: str, plain: Any) -> str | None:
    """The first surrogate pair held as two code points in the JSON ``text`` of
    ``plain`` (its JSON shape), or ``None``. The cheap tests come first: only text with
    the escapes of a pair (a character beyond the BMP, or such a pair) is encoded again
    without them, where a character beyond the BMP is one code point, and a split pair
    is two."""
    if "\\ud" not in text or _PAIR_ESCAPES.search(text) is None:
        return None
    found = _SPLIT_PAIR.search(json.dumps(plain, ensure_ascii=False))
    return None if found is None else found.group()


def _joined_pairs(text: Any) -> Any:
    """``text`` with each surrogate pair held as two code points joined into the one
    character it stands for."""
    if type(text) is not str or _SPLIT_PAIR.search(text) is None:
        return text
    return _SPLIT_PAIR.sub(
        lambda pair: pair.group().encode("utf-16", "surrogatepass").decode("utf-16"), text)


def _split_pair_error(value: object, pair: str, what: str) -> PayloadError:
    """The error of a ``value`` that holds a string with the surrogate ``pair`` as two
    code points: where it is, and the one character it would come back as."""
    path = _path_to(value, lambda item: isinstance(item, str) and pair in item)
    where = (f" at {path.lstrip('.')}" if path else "" if path is not None
             else f" (inside a {_type_name(value)})")
    joined = pair.encode("utf-16", "surrogatepass").decode("utf-16")
    return PayloadError(
        f"cannot store {what}: the str{where} holds the surrogate pair {pair!r} as two "
        "code points (as 'surrogatepass' decoding gives), which JSON would read back as "
        f"the one character {joined!r}: join them first "
        "(s.encode('utf-16', 'surrogatepass').decode('utf-16'))")


#: leaves whose JSON text ``json.dumps`` would give, without its encoder (hot path:
#: the JSON text of a value of one of these types is ``LEAF_TEXT[type(value)](value)``;
#: ``ValueError`` if it has none, which :func:`to_json` of it names)
LEAF_TEXT: dict[type, Callable[[Any], str]] = {
    int: int.__repr__,
    str: _str_text,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _value: "null",
}


def _check_json_leaf(value: object) -> Any:
    # json.dumps calls this for anything it cannot encode: the walk above
    # left it untouched because no hook knew it.
    raise _Unconvertible(value)


def unstructure(value: Any, *, what: str = "value") -> Any:
    """Turn ``value`` into plain JSON-shaped builtins; raises ``PayloadError``."""
    try:
        plain = _converter.unstructure(value)
        # Validate the leaves now (json.dumps would reject them later anyway).
        json.dumps(plain, default=_check_json_leaf)
    except _Unconvertible as exc:
        raise _payload_error(value, exc, what) from None
    except PayloadError:
        raise
    except Exception as exc:  # a user hook or attrs getter failed
        raise _conversion_failed(value, exc, what) from exc
    return plain


def _path_to(root: object, bad: object | Callable[[object], bool]) -> str | None:
    """Where ``bad`` is inside ``root`` (``[0].when``, ``['items'][2]``, ``[0] (a dict
    key)``): through lists, tuples, dicts and the fields of dataclasses and attrs
    classes; ``bad`` is the value itself, or a test of a value (a callable). ``None`` if
    not found (an error path only: its cost does not matter)."""
    def found(item: object) -> bool:
        return bad(item) if callable(bad) else item is bad

    todo: list[tuple[object, str]] = [(root, "")]
    seen: set[int] = set()
    while todo:
        item, path = todo.pop()
        if found(item):
            return path
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list | tuple):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            for k in item:
                if found(k):
                    return f"{path or 'the top'} (a key of the dict there)"
            todo.extend((v, f"{path}[{k!r}]") for k, v in item.items())
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            todo.extend((getattr(item, f.name, None), f"{path}.{f.name}")
                        for f in dataclasses.fields(item))
        elif attrs.has(type(item)):
            todo.extend((getattr(item, a.name, None), f"{path}.{a.name}")
                        for a in attrs.fields(type(item)))  # type: ignore[arg-type]
    return None


def _inside(item: object) -> Iterable[object] | None:
    """The values ``item`` holds, if it is a list, tuple, dict, dataclass or attrs
    instance (what converting walks into); else ``None``."""
    if isinstance(item, list | tuple):
        return item
    if isinstance(item, dict):
        return item.values()
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [getattr(item, f.name, None) for f in dataclasses.fields(item)]
    if attrs.has(type(item)):
        return [getattr(item, a.name, None)
                for a in attrs.fields(type(item))]  # type: ignore[arg-type]
    return None


def _nesting(root: object) -> int | None:
    """How many lists, tuples, dicts and records lie one inside another in ``root`` at
    most; ``None`` if one holds itself. Walked without recursion (an error path only:
    its cost does not matter)."""
    deepest = 0
    path: set[int] = set()  # (the containers walked down through to here)
    walked: dict[int, int] = {}  # (the deepest level each was walked from)
    todo: list[tuple[object, int]] = [(root, 1)]
    while todo:
        item, level = todo.pop()
        if level == 0:  # (walked back up out of it)
            path.discard(id(item))
            continue
        held = _inside(item)
        if held is None:
            continue
        if id(item) in path:
            return None
        if walked.get(id(item), 0) >= level:
            continue  # (one shared: walked already, as deep)
        walked[id(item)] = level
        deepest = max(deepest, level)
        path.add(id(item))
        todo.append((item, 0))
        todo.extend((value, level + 1) for value in held)
    return deepest


def _too_long_for_text(item: object) -> bool:
    """An int with more digits than Python turns into text (``sys.get_int_max_str_digits``)."""
    if type(item) is not int:
        return False
    try:
        int.__repr__(item)
    except ValueError:
        return True
    return False


def _conversion_failed(value: object, exc: Exception, what: str) -> PayloadError:
    """The error of a conversion that raised ``exc``: an int too long for text and a
    value nested too deep are named as such (with where, for the int); any other
    exception (a user's hook, an attrs getter) is shown as it is."""
    if isinstance(exc, RecursionError):
        depth = _nesting(value)
        if depth is None:
            return PayloadError(
                f"cannot store {what}: a value of type {_type_name(value)} holds itself "
                "(a list, dict or object inside itself): JSON has no form for it")
        limit = sys.getrecursionlimit()
        return PayloadError(
            f"cannot store {what}: a value of type {_type_name(value)} is nested {depth} "
            "levels deep (lists, dicts and objects one inside another), too deep to "
            "convert to JSON: converting takes three Python frames a level of lists and "
            f"two a level of dicts and objects, within Python's recursion limit of {limit} "
            f"(some {limit // 3} levels of lists)")
    digits = isinstance(exc, ValueError) and "integer string conversion" in str(exc)
    found = _path_to(value, _too_long_for_text) if digits else None  # ("": the value itself)
    if found is None:
        return PayloadError(
            f"cannot store {what}: converting a value of type {_type_name(value)} failed: "
            f"{type(exc).__name__}: {exc}")
    path = f" at {found.lstrip('.')}" if found else ""
    return PayloadError(
        f"cannot store {what}: an int{path} has more than {sys.get_int_max_str_digits()} "
        "digits, more than Python turns into text (store it as a string, or raise "
        "the limit with sys.set_int_max_str_digits())")


#: the types a value stored or restored may have (what a refused one is told)
_DURABLE = ("only builtins (dict with str keys, list, tuple, str, int, float, bool, None), "
            "attrs classes, dataclasses, enums, datetimes, uuid.UUID and Pid are "
            "durable")


def _payload_error(value: object, exc: _Unconvertible, what: str) -> PayloadError:
    bad = exc.value
    path = None if bad is value else _path_to(value, bad)
    where = ("" if bad is value else f" at {path.lstrip('.')}" if path
             else f" (inside a {_type_name(value)})")
    reason = exc.reason or _DURABLE
    # (a call of an async function, an activity's too, not awaited: a new user's slip)
    missed = " (a coroutine: a missing await?)" if isinstance(bad, types.CoroutineType) else ""
    return PayloadError(
        f"cannot store {what}: a value of type {_type_name(bad)}{where}{missed} "
        f"cannot be converted to JSON: {reason}"
    )


def to_json(value: Any, *, what: str, hint: Any = Any) -> str:
    """Encode ``value`` as durable JSON text.

    ``what`` names the value for the error message, e.g.
    ``"argument 2 of workflow 'app.orders:order_workflow'"``. Anything that
    cannot round-trip (a set, bytes, an arbitrary object, a lambda, a dict with
    non-``str`` keys) raises ``garrison.PayloadError``
    naming its type and ``what``. ``hint``, the value's declared type, is given
    where it declares a dict of non-``str`` keys (:func:`declares_keys`): such a
    dict is stored with each key as its JSON text (``{1: "a"}`` as ``{"1":"a"}``),
    which restoring by the same hint reads back.
    """
    leaf = LEAF_TEXT.get(type(value))
    if leaf is not None:
        try:
            return leaf(value)
        except _SplitPairError as exc:
            raise _split_pair_error(value, exc.pair, what) from None
        except ValueError as exc:  # an int of more digits than Python converts to text
            raise _conversion_failed(value, exc, what) from None
    if type(value) in _LEAVES:
        try:
            return json.dumps(value)
        except ValueError as exc:  # pragma: no cover - leaves always encode
            raise PayloadError(f"cannot store {what}: {exc}") from None
    try:
        plain = (_converter.unstructure(value) if hint is Any
                 else _unstructure_declared(value, hint))
        text = json.dumps(plain, default=_check_json_leaf, separators=(",", ":"))
    except _Unconvertible as exc:
        raise _payload_error(value, exc, what) from None
    except PayloadError:
        raise
    except Exception as exc:
        raise _conversion_failed(value, exc, what) from exc
    pair = _split_pair(text, plain)
    if pair is not None:
        raise _split_pair_error(value, pair, what)
    return text


def _not_a_number(name: str) -> Any:
    raise ValueError(name)


#: the search filters (keys) one query takes at most: each is a condition of the
#: query, and SQLite refuses some hundreds of them ("Expression tree is too large")
MAX_SEARCH_FILTERS = 64


def check_search_filters(search: Any) -> None:
    """``ValueError`` naming the limit if ``search`` (a mapping of filters, or
    ``None``) has more than :data:`MAX_SEARCH_FILTERS` keys."""
    if search is not None and len(search) > MAX_SEARCH_FILTERS:
        raise ValueError(f"too many search filters ({len(search)}): a query takes at most "
                         f"{MAX_SEARCH_FILTERS}")


#: the largest LIMIT both stores take (a signed 64-bit integer)
_MOST_ROWS = 2**63 - 1


def check_limit(limit: Any) -> int | None:
    """``list_workflows``'s ``limit`` as the query takes it: ``None`` (no limit) for
    ``None`` and for a limit past any count a store can hold; ``TypeError`` naming the
    value if it is not an int, ``ValueError`` if it is negative."""
    if limit is None:
        return None
    if type(limit) is not int:
        raise TypeError(f"list_workflows: limit must be a whole number (an int) or None, "
                        f"got {type(limit).__name__}: {limit!r}")
    if limit < 0:
        raise ValueError(f"list_workflows: limit must be at least 0, got {limit}")
    return None if limit > _MOST_ROWS else limit


#: the integers a search attribute holds: what SQLite's JSON functions compare exactly
#: (a wider one is read as a float there: 2**63 matched 2**63 + 1)
_SEARCH_INT = range(-(2**63), 2**63)


def check_search_value(key: str, value: Any, what: str) -> None:
    """``ValueError`` if the search attribute ``key``'s ``value`` holds an integer beyond
    64 bits (anywhere in it): no store would compare it exactly."""
    todo = [value]
    while todo:
        item = todo.pop()
        if type(item) is int and item not in _SEARCH_INT:
            # (one of thousands of digits is not said in full: past 4,300 Python will
            # not turn it into text)
            said = (f"the integer {item}" if item.bit_length() <= 256 else
                    f"an integer of {item.bit_length():,} bits")
            raise ValueError(f"{what} {key!r} holds {said}, beyond 64 bits: no "
                             "store compares it exactly (give it as a string)")
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)


def search_json(key: str, value: Any) -> str:
    """The JSON text of a search filter's ``value`` (:func:`to_json`), compared with the
    stored attribute ``key``. NaN and infinity (anywhere in it) are ``ValueError``: no
    search attribute holds one (``workflow.attrs`` refuses them), and neither store can
    compare with one (SQLite calls it malformed JSON, PostgreSQL an invalid token)."""
    text = to_json(value, what=f"search attribute {key!r}")
    check_search_value(key, value, "search filter")
    if "NaN" in text or "Infinity" in text:  # else no constant: the common case is cheap
        try:
            json.loads(text, parse_constant=_not_a_number)
        except ValueError:
            raise ValueError(f"search attribute {key!r} is {value!r}: NaN and infinity are "
                             "not JSON values (no search attribute holds one)") from None
    return text


def structure(obj: Any, type_hint: Any = Any, *, what: str = "value") -> Any:
    """Restore a typed value from its plain JSON shape (``obj``) and ``type_hint``.

    Raises ``garrison.PayloadError`` with cattrs' readable error list.
    """
    if type_hint is Any or type_hint is object:
        return obj
    try:
        return _converter.structure(obj, type_hint)
    except BaseValidationError as exc:
        problems = "; ".join(_problem(line) for line in cattrs.transform_error(
            exc, path="$", format_exception=_format_exception))
        raise PayloadError(f"cannot restore {what} as {_hint_name(type_hint)}: {problems}") from exc
    except (_ScalarMismatch, _LengthMismatch) as exc:
        raise PayloadError(f"cannot restore {what} as {_hint_name(type_hint)}: {exc}") from None
    except Exception as exc:
        if _no_hook(exc):
            raise PayloadError(f"cannot restore {what} as {_hint_name(type_hint)}: "
                               f"{_no_hook(exc)}") from None
        why = unrestorable(type_hint)
        if why is not None:
            raise PayloadError(f"cannot restore {what}: {why}") from None
        if (isinstance(exc, ValueError) and isinstance(type_hint, type)
                and issubclass(type_hint, enum.Enum)):
            raise PayloadError(f"cannot restore {what} as {_hint_name(type_hint)}: "
                               f"{_not_a_member(type_hint, exc)}") from None
        fields = _record_fields(type_hint)
        shown = json.dumps(obj, default=repr)
        got = f"got {type(obj).__name__} {shown[:80]}{'...' if len(shown) > 80 else ''}"
        if fields is not None and not isinstance(obj, dict):
            raise PayloadError(
                f"cannot restore {what} as {_hint_name(type_hint)}: expected a JSON object "
                f"with its fields ({', '.join(fields)}), {got}"
            ) from exc
        origin = getattr(type_hint, "__origin__", None)
        if isinstance(origin, type) and issubclass(origin, Mapping) and not isinstance(obj, dict):
            raise PayloadError(f"cannot restore {what} as {_hint_name(type_hint)}: expected a "
                               f"JSON object, {got}") from exc
        raise PayloadError(
            f"cannot restore {what} as {_hint_name(type_hint)}: {type(exc).__name__}: {exc}"
        ) from exc


def unrestorable(hint: Any) -> str | None:
    """Why no value can be restored as ``hint`` (a union of records nothing tells apart:
    ``A | B`` of the same fields), or ``None``: the converter can make its restoring
    function (cattrs keeps it, so asking again is cheap), or the hint names a type it
    has none for (``NoReturn``, ``NoneType``: no value to restore is not a wrong hint;
    a value given one says so)."""
    try:
        _converter.get_structure_hook(hint)
    except StructureHandlerNotFoundError:
        return None
    except Exception as exc:
        advice = (": give each class a field the others lack, or a field of its own "
                  'Literal value (kind: Literal["a"] = "a"), or annotate a single class'
                  if "disambiguate" in str(exc) else "")
        return (f"its annotation {_hint_name(hint)} itself cannot be restored "
                f"({type(exc).__name__}: {exc}){advice}")
    return None


def _format_exception(exc: BaseException, hint: Any) -> str:
    """cattrs' wording of one problem, but a value that should have been an object (a
    mapping, or a record read from one) says so, not ``unknown error (... 'keys')``."""
    if isinstance(exc, AttributeError) and str(exc).endswith(("attribute 'keys'",
                                                              "attribute 'items'")):
        return "expected a JSON object"
    if isinstance(exc, (_ScalarMismatch, _LengthMismatch)):  # (they name what was found)
        return str(exc)
    if _no_hook(exc):
        return _no_hook(exc)
    if isinstance(exc, ValueError) and isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _not_a_member(hint, exc)
    return cattrs.v.format_exception(exc, hint)


def _no_hook(exc: BaseException) -> str:
    """What a value of a type no hook restores (``Decimal``, ``date``) is told: the types
    that are durable, not cattrs' ``Register a structure hook for it`` (on a converter
    of garrison's own, which no application reaches); ``""`` for any other ``exc`` (a
    name not resolved, ``ForwardRef('Money')``, is no type: cattrs' words name it)."""
    if isinstance(exc, StructureHandlerNotFoundError) and isinstance(exc.type_, type):
        return f"no value is restored as {_hint_name(exc.type_)}: {_DURABLE}"
    return ""


def _not_a_member(hint: type[enum.Enum], exc: ValueError) -> str:
    """What an enum takes, and the value given (from the enum's own ``'x' is not a valid
    Tier``), for a value that is none of its members' (cattrs said ``expected Tier``)."""
    values = ", ".join(json.dumps(m.value, default=repr) for m in list(hint)[:20])
    more = ", ..." if len(hint) > 20 else ""
    said = str(exc)
    suffix = f" is not a valid {hint.__qualname__}"
    got = f", got {said.removesuffix(suffix)}" if said.endswith(suffix) else ""
    return f"expected one of {hint.__qualname__}'s values ({values}{more}){got}"


def _problem(line: str) -> str:
    """One line of cattrs' ``transform_error`` (``"<problem> @ $.items[0].qty"``) as
    ``"field 'items[0].qty': <problem>"``: where the value is, named apart from what it
    is (the workflow and argument; not glued onto the workflow's name)."""
    problem, _, path = line.rpartition(" @ $")
    if not _:
        return line
    problem = problem.removeprefix("invalid value for type, ")
    if not path:
        return problem
    if path.startswith("."):
        return f"field '{path[1:]}': {problem}"
    return f"at {path}: {problem}"


def _record_fields(hint: Any) -> list[str] | None:
    """The field names of an attrs class or a dataclass (restored from a JSON object)."""
    if isinstance(hint, type) and attrs.has(hint):
        return [f.name for f in attrs.fields(hint)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [f.name for f in dataclasses.fields(hint)]
    return None


def from_json(text: str | bytes, type_hint: Any = Any, *, what: str = "value") -> Any:
    """Decode durable JSON text, restoring a typed value from ``type_hint``.

    Without a hint the plain JSON shape comes back (dict/list/str/int/float/
    bool/None). Bad text or a value that does not fit the hint raises
    ``garrison.PayloadError``.
    """
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise PayloadError(f"cannot restore {what}: invalid JSON: {exc}") from None
    return structure(obj, type_hint, what=what)


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return _script_named(repr(hint).replace("typing.", ""))
