"""Values in and out of the journal: typed arguments and results restored from the
annotations of workflow and activity functions, and the JSON round trip that makes a
live run see exactly what a replay will see."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import types
import typing
from typing import Any

from ..._errors import PayloadError
from ...persistence import LEAF_TEXT, to_json
from ...persistence import structure as _structure
from ...persistence._converter import declares_keys, type_name, unrestorable

__all__ = ["PLAIN", "arguments_and_plain", "arguments_json", "arity_problem",
           "json_round_trip", "plain_or_repr", "restore_args", "result_plain",
           "result_refused", "result_unrestorable", "return_hint", "stored_as", "structure",
           "workflow_result"]

log = logging.getLogger("garrison.workflow")

#: types whose JSON form is themselves (floats excepted: JSON may change their repr)
PLAIN = (str, int, float, bool, type(None))
_loads = json.loads


@functools.lru_cache(maxsize=1024)
def _hints(fn: Any) -> tuple[list[tuple[str, Any, Any]], Any]:
    """Positional parameter (name, hint, kind) list and the return hint of ``fn``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = _each_hint(fn)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    out = [(p.name, hints.get(p.name, Any), p.kind) for p in params]
    return out, hints.get("return", Any)


def _each_hint(fn: Any) -> dict[str, Any]:
    """``fn``'s hints resolved one annotation at a time, when resolving them all at once
    failed: one that cannot be resolved (a name imported only under ``TYPE_CHECKING``)
    leaves that parameter untyped, not every other one too; a WARNING names each."""
    annotations = getattr(fn, "__annotations__", None)
    if not isinstance(annotations, dict):
        return {}
    scope = types.SimpleNamespace(__globals__=getattr(inspect.unwrap(fn), "__globals__", {}))
    hints: dict[str, Any] = {}
    failed: list[str] = []
    for name, annotation in annotations.items():
        scope.__annotations__ = {name: annotation}
        try:
            hints.update(typing.get_type_hints(scope))
        except Exception as exc:
            which = "return" if name == "return" else f"parameter {name!r}"
            failed.append(f"{which} ({annotation!r}: {type(exc).__name__}: {exc})")
    if failed:
        log.warning("%s:%s: cannot resolve the annotation of %s: that value is restored "
                    "as plain JSON (a dict, list, str...), not as the type it names",
                    getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn)),
                    ", ".join(failed))
    return hints


@functools.lru_cache(maxsize=1024)
def _positional_range(fn: Any) -> tuple[int, int | None] | None:
    """``(least, most)`` positional arguments ``fn`` takes (``most`` ``None`` with
    ``*args``); ``(-1, -1)``: it can never be called with positional arguments alone (a
    keyword-only parameter without a default); ``None``: no signature to read."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = inspect.Parameter
    if any(p.kind is kinds.KEYWORD_ONLY and p.default is kinds.empty for p in params):
        return -1, -1
    positional = [p for p in params
                  if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    least = sum(1 for p in positional if p.default is kinds.empty)
    most = None if any(p.kind is kinds.VAR_POSITIONAL for p in params) else len(positional)
    return least, most


def arity_problem(fn: Any, name: str, args: typing.Sequence[Any], given: str) -> str | None:
    """Why workflow ``name`` (``fn``) cannot be called with ``args`` as its positional
    arguments -- what it takes, and what ``given`` gave -- or ``None`` (also when ``fn``
    has no signature to read: the call will say)."""
    shape = _positional_range(fn)
    if shape is None:
        return None
    least, most = shape
    if least >= 0 and least <= len(args) and (most is None or len(args) <= most):
        return None
    signature = inspect.signature(fn)
    params = signature.parameters.values()
    kinds = inspect.Parameter
    shown = signature.replace(  # its parameters as written, without annotations
        parameters=[p.replace(annotation=kinds.empty) for p in params],
        return_annotation=inspect.Signature.empty)
    if least < 0:  # (however many it was given: none binds)
        # a workflow is given positional arguments only (start_workflow's *args, a JSON
        # array in the journal, JSON_ARGS, a schedule's input), never a keyword
        names = ", ".join(repr(p.name) for p in params
                          if p.kind is kinds.KEYWORD_ONLY and p.default is kinds.empty)
        return (f"workflow {name} has no default for the keyword-only parameter(s) "
                f"{names} of {shown}, but a workflow is given positional arguments only "
                "(no start can give a keyword argument): give each a default, or make it "
                "positional")
    try:
        signature.bind(*args)
    except TypeError as exc:
        why = str(exc)
    else:  # pragma: no cover - the range above says it cannot bind
        return None
    positional = [p for p in params
                  if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is kinds.empty)
    if any(p.kind is kinds.VAR_POSITIONAL for p in params):
        takes = f"at least {required}"
    elif required == len(positional):
        takes = str(required)
    else:
        takes = f"{required} to {len(positional)}"
    return (f"workflow {name} takes {takes} argument(s) {shown}, but {given} "
            f"{len(args)}: {json.dumps(list(args), default=str)} ({why})")


@functools.lru_cache(maxsize=1024)
def _argument_hints(fn: Any) -> tuple[tuple[Any, ...], Any, tuple[str, ...]] | None:
    """The hints of ``fn``'s positional parameters and of its ``*args`` (``Any`` without
    one), and the positional parameters' names; ``None`` when every hint is ``Any``
    (nothing to restore)."""
    params, _ = _hints(fn)
    if all(h is Any for _, h, _k in params):
        return None
    kinds = inspect.Parameter
    named = [(name, hint) for name, hint, kind in params
             if kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    rest = next((hint for _n, hint, kind in params if kind is kinds.VAR_POSITIONAL), Any)
    return tuple(h for _n, h in named), rest, tuple(n for n, _h in named)


def stored_as(hint: Any) -> Any:
    """The hint ``to_json`` is given for a value of declared type ``hint``: ``hint`` if
    it declares a dict of non-``str`` keys (``dict[int, Order]``), else ``Any`` (stored
    by the value's own type: the common case, with no work more)."""
    try:
        return hint if hint is not Any and declares_keys(hint) else Any
    except TypeError:  # (an unhashable annotation: no dict of it declared)
        return Any


@functools.lru_cache(maxsize=1024)
def _arguments_stored_as(fn: Any) -> tuple[tuple[Any, ...], Any] | None:
    """``stored_as`` of each of ``fn``'s positional parameters and of its ``*args``;
    ``None`` when none declares a dict of non-``str`` keys."""
    shape = _argument_hints(fn)
    if shape is None:
        return None
    positional, rest, _names = shape
    hints = tuple(stored_as(h) for h in positional)
    rest = stored_as(rest)
    if rest is Any and all(h is Any for h in hints):
        return None
    return hints, rest


def arguments_json(fn: Any, args: typing.Sequence[Any], what: str) -> str:
    """The JSON text of ``args``, the positional arguments of workflow ``fn``: a JSON
    array, each by its parameter's annotation where that declares a dict of
    non-``str`` keys (:func:`stored_as`)."""
    shape = _arguments_stored_as(fn)
    if shape is None:
        return to_json(list(args), what=what)
    positional, rest = shape
    hint = tuple[tuple(positional[i] if i < len(positional) else rest  # type: ignore[misc]
                       for i in range(len(args)))] if args else Any
    return to_json(list(args), what=what, hint=hint)


def arguments_and_plain(fn: Any, args: typing.Sequence[Any], what: str
                        ) -> tuple[str, list[Any]]:
    """:func:`arguments_json` of ``args`` and their JSON shape, as ``json.loads`` of
    that text gives it. Arguments that are all ints, strings, booleans or ``None`` (what
    most starts pass), of a function that declares no dict of non-``str`` keys, are
    written by :data:`LEAF_TEXT`, each the text ``to_json`` gives it, and read back
    they are themselves: neither the converter's pass nor a decoding of the text. Any
    other argument, or a leaf that has no text (a string holding a split surrogate
    pair), goes the general way, which names what is wrong."""
    if _arguments_stored_as(fn) is None:
        texts = []
        for value in args:
            leaf = LEAF_TEXT.get(type(value))
            if leaf is None:
                break
            try:
                texts.append(leaf(value))
            except ValueError:
                break
        else:
            return "[" + ",".join(texts) + "]", list(args)
    text = arguments_json(fn, args, what)
    return text, _loads(text)


def restore_args(fn: Any, plain_args: list[Any], what: str) -> list[Any]:
    """Restore typed arguments from ``fn``'s annotations (``*args: T`` types each extra)."""
    shape = _argument_hints(fn)
    if shape is None:
        return plain_args
    positional, rest, names = shape
    out = []
    for i, value in enumerate(plain_args):
        hint = positional[i] if i < len(positional) else rest
        if hint is Any or (type(value) is hint and hint in PLAIN):
            out.append(value)  # (without the error message's text, made per argument)
        else:
            name = f" ({names[i]})" if i < len(names) else ""
            out.append(structure(value, hint, what=f"argument {i + 1}{name} of {what}"))
    return out


def structure(value: Any, hint: Any, *, what: str) -> Any:
    """Restore a typed value from its JSON shape (``-> None`` and ``Any`` pass through)."""
    if hint is Any or hint is None or hint is type(None) or (
            type(value) is hint and hint in PLAIN):
        return value
    return _structure(value, hint, what=what)


def return_hint(fn: Any) -> Any:
    """The return annotation of ``fn`` (``Any`` if none); an unhashable callable's (an
    activity that is a dataclass instance) is read at each ask, not kept."""
    try:
        return _hints(fn)[1]
    except TypeError:  # (the cache's hashing: _hints itself raises none)
        return _hints.__wrapped__(fn)[1]


@functools.lru_cache(maxsize=1024)
def result_unrestorable(fn: Any) -> str | None:
    """Why no result of ``fn`` could be restored by its return annotation (``A | B`` of
    records nothing tells apart), or ``None``: asked when a workflow starts, not after it
    ran to its end (its arguments' annotations are met then too, restoring them)."""
    return unrestorable(return_hint(fn))


def result_refused(fn: Any, wid: str, name: str, value: Any, plain: Any) -> TypeError | None:
    """Why workflow ``wid`` (``name``, running ``fn``) may not end with ``value``
    (``plain``: its JSON shape, as stored) as its result: ``fn``'s return annotation
    does not accept it -- tested as ``result()`` restores it, by :func:`structure`, so a
    value ``result()`` can read is never refused -- else ``None``."""
    hint = return_hint(fn)
    try:
        structure(plain, hint, what="the result")
    except Exception as exc:
        kind = type_name(type(value))
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        refused = TypeError(
            f"workflow {wid!r} ({name}) returned {article} {kind}, which its return "
            f"annotation {type_name(hint)} does not accept ({exc})")
        refused.__cause__ = exc
        return refused
    return None


def workflow_result(fn: Any, wid: str, name: str, value: Any
                    ) -> tuple[str | None, Any, Exception | None]:
    """``(json text, plain)`` of the result ``value`` workflow ``wid`` (``name``, running
    ``fn``, ``None`` if unknown) ends with, and ``None``; or ``(None, None, why)`` when it
    may not end with it: no JSON form (``PayloadError``), or its return annotation
    refuses it (:func:`result_refused`). The live host and a replay decide alike.

    An int, a string, a boolean or ``None`` (what most workflows return) is written by
    :data:`LEAF_TEXT`, as :func:`to_json` writes it first, and its JSON shape is itself:
    no decoding of the text just made (as :func:`activity_result_json`)."""
    leaf = LEAF_TEXT.get(type(value))
    text = None
    if leaf is not None:
        try:
            text, plain = leaf(value), value
        except ValueError:  # (no text: to_json names why)
            pass
    if text is None:
        try:
            text = to_json(value, what=f"the result of workflow {wid!r}",
                           hint=Any if fn is None else stored_as(return_hint(fn)))
        except Exception as exc:
            return None, None, exc
        plain = _loads(text)
    refused = None if fn is None else result_refused(fn, wid, name, value, plain)
    if refused is not None:
        return None, None, refused
    return text, plain, None


def result_plain(text: str) -> Any:
    """``json.loads(text)`` of a stored result's JSON text; the text of an int (what most
    workflows return, written by ``int.__repr__``) is read by ``int`` without the JSON
    decoder, the same value."""
    digits = text[1:] if text[:1] == "-" else text
    if digits.isdigit() and digits.isascii() and (digits[0] != "0" or len(digits) == 1):
        return int(text)  # (JSON has no leading zeros: "007" is json.loads's error)
    return _loads(text)


def json_round_trip(value: Any, what: str, hint: Any = Any) -> tuple[str, Any]:
    """``(json_text, plain)`` of ``value`` (of declared type ``hint``, given as
    :func:`stored_as` gives it): what a replay would see."""
    text = to_json(value, what=what, hint=hint)
    if type(value) in PLAIN and type(value) is not float:
        return text, value
    return text, _loads(text)


def activity_result_json(value: Any, name: str, limit: int,
                         hint: Any = Any) -> tuple[str, Any]:
    """:func:`json_round_trip` of the result of activity ``name`` (``hint``: its return
    annotation as :func:`stored_as` gives it); the message naming it
    is only formatted for a value that needs converting (a plain result, what most
    steps return, encodes without one). One of more than ``limit`` bytes of JSON (the
    store's ``value_limit``: its text is ASCII) is a ``PayloadError`` too: no commit
    could hold it, and failing there the activity would run again at each resume."""
    leaf = LEAF_TEXT.get(type(value))  # (to_json's first test, without its call)
    text = None
    if leaf is not None:
        try:
            text, plain = leaf(value), value
        except ValueError:  # (an int too long for text: to_json says so)
            pass
    if text is None:
        text, plain = json_round_trip(value, f"the result of activity {name!r}", hint)
    if len(text) > limit:
        raise PayloadError(
            f"cannot store the result of activity {name!r}: its JSON text is "
            f"{len(text):,} bytes, more than the store holds in one value ({limit:,})")
    return text, plain


def plain_or_repr(value: Any) -> Any:
    """``value`` as plain JSON, or its ``repr`` when it has none (an event's result)."""
    try:
        return _loads(to_json(value, what="an event result"))
    except Exception:
        return repr(value)
