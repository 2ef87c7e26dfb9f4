"""Structuring YAML data into entries with one private cattrs converter.

The converter is strict (``forbid_extra_keys``, no silent coercion of types) and
its nested validation errors are flattened into ``(field path, message)`` pairs,
so one run reports every mistake of an entry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from .._duration import negative, parse_duration, parse_retention
from .._errors import close_match
from ._entries import (
    _INTERNAL_FIELDS,
    HostEntry,
    Lifecycle,
    RestartPolicy,
    ScheduleEntry,
    ServiceEntry,
    SourceEntry,
    WorkflowHostEntry,
    _allowed_fields,
    _FieldProblem,
    _is_number,
)

T = TypeVar("T")


# --------------------------------------------------------------------------- converter


class _Expected(ValueError):
    """A value the field cannot be read as. ``plain``: said by its type alone (``a
    string``): a field with a check of its own says its form instead (see
    :func:`_in_its_form`)."""

    def __init__(self, expected: str, got: object, *, plain: bool = False) -> None:
        self.detail = f"expected {expected}, got {got!r}"
        self.plain = plain
        super().__init__(self.detail)


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise _Expected("a string", value, plain=True)
    return value


def _strict_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise _Expected("true or false", value, plain=True)
    return value


def _strict_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Expected("an integer", value, plain=True)
    return value


def _strict_float(value: object, _: object) -> float:
    if not _is_number(value):
        raise _Expected("a number", value, plain=True)
    try:
        return float(value)
    except OverflowError:  # (an int of hundreds of digits)
        raise _Expected("a number a float can hold (up to about 1.8e308)", value) from None


def _duration_hook(value: object, _: object) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        sign = " that is not negative," if negative(value) else ""
        raise _Expected(f"a duration{sign} such as 10, '250ms', '30s', '5m' or '1h30m'",
                        value) from None


def _optional_duration_hook(value: object, _: object) -> float | None:
    return None if value is None else _duration_hook(value, _)


def _retention_hook(value: object, _: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # (a config's other durations take seconds bare; this one deletes data: `30`
        # meant as days would delete every ended workflow half a minute after its end)
        raise _Expected("a duration with its unit (as '30d' or '12h': a bare number would "
                        "be seconds, and every workflow deleted that many seconds after it "
                        "ended)", value)
    try:
        return parse_retention(value, what="duration")
    except ValueError:
        raise _Expected("a duration longer than 0 and at most 100 years (as '30d' or '12h')",
                        value) from None


def _ids_hook(value: object, _: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Expected("a list of entry ids", value)
    return tuple(value)


def _input_hook(value: object, _: object) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _mapping_hook(value: object, _: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Expected("a mapping", value)
    return dict(value)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    dur = override(struct_hook=_duration_hook)
    internal = override(omit=True)
    meta = override(struct_hook=_mapping_hook)
    conv.register_structure_hook(
        RestartPolicy,
        _validated(
            RestartPolicy,
            make_dict_structure_fn(RestartPolicy, conv, initial_delay=dur, max_delay=dur),
        ),
    )
    conv.register_structure_hook(
        Lifecycle,
        _validated(
            Lifecycle,
            make_dict_structure_fn(
                Lifecycle,
                conv,
                requires=override(struct_hook=_ids_hook),
                start_timeout=dur,
                stop_timeout=dur,
                stable_threshold=dur,
            ),
        ),
    )
    for cls in (HostEntry, WorkflowHostEntry, SourceEntry, ServiceEntry, ScheduleEntry):
        extra: dict[str, Any] = {
            f.name: internal for f in attrs.fields(cls) if f.name in _INTERNAL_FIELDS
        }
        if cls in (ServiceEntry, ScheduleEntry):
            extra["input"] = override(struct_hook=_input_hook)
        if cls is WorkflowHostEntry:
            extra["retention"] = override(struct_hook=_retention_hook)
        if cls is ScheduleEntry:
            extra["every"] = override(struct_hook=_optional_duration_hook)
            extra["catchup_window"] = dur
        conv.register_structure_hook(
            cls, _validated(cls, make_dict_structure_fn(cls, conv, meta=meta, **extra))
        )
    return conv


def _flatten(
    exc: BaseException, path: tuple[str, ...], cls: type[Any] | None
) -> Iterator[tuple[tuple[str, ...], str]]:
    """Turn a (nested) cattrs validation error into ``(field path, message)`` pairs, in
    the order of its exceptions (the file's: see :func:`_validated`)."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        kind = (AttributeValidationNote if isinstance(exc, ClassValidationError)
                else IterableValidationNote)
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", ()) if n.__class__ is kind),
                        None)
            if note is None:
                yield from _flatten(sub, path, cls)
                continue
            name = str(getattr(note, "name", getattr(note, "index", "?")))
            sub_cls = getattr(note, "type", None)
            yield from _flatten(
                sub,
                (*path, name),
                sub_cls if isinstance(sub_cls, type) and attrs.has(sub_cls) else None,
            )
    elif isinstance(exc, ForbiddenExtraKeysError):
        fields = _allowed_fields(exc.cl) if path == () else [f.name for f in attrs.fields(exc.cl)]
        allowed = ", ".join(fields)
        for key in sorted(exc.extra_fields, key=str):
            hint = typo_hint(key, fields)
            yield (*path, str(key)), f"unknown field; {hint}allowed fields are: {allowed}"
    elif isinstance(exc, KeyError):
        yield path, "required field is missing"
    elif isinstance(exc, _Expected | _FieldProblem):
        yield path, exc.detail
    elif isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            yield from _flatten(sub, path, cls)
    elif isinstance(exc, TypeError) and cls is not None:
        yield path, "expected a mapping"
    else:
        yield path, f"{type(exc).__name__}: {exc}"


def close_field(key: object, allowed: Iterable[str]) -> str | None:
    """The allowed field (or kind) an unknown key is most likely a typo of (``evry``:
    ``every``), or ``None`` (garrison's one rule of a "did you mean", ``close_match``)."""
    return close_match(key, allowed)


def typo_hint(key: object, allowed: Iterable[str]) -> str:
    """``"did you mean 'every'? "`` for a key :func:`close_field` places, else ``""``."""
    guess = close_field(key, allowed)
    return "" if guess is None else f"did you mean {guess!r}? "


def _validated(cls: type[T], hook: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Wrap a generated structure hook: run every field validator of the result and
    raise all failures together as a cattrs ``ClassValidationError`` with field notes.

    Structuring runs with attrs validators disabled (see ``_parse_entry``), so
    *every* out-of-range field is reported, not only the first one. A field that cannot
    be structured at all (``catchup_window: -5s``) does not hide the others: the value
    is structured again with that field at its default (or, for a nested block, at what
    could be read of it), and the validators of the other fields run on that. The
    error then carries that stand-in as ``.partial`` and the names of the fields it does
    not hold as given as ``.failed``, so the loader still checks the entry's references.
    """

    allowed = {f.name for f in attrs.fields(cast(Any, cls)) if f.name not in _INTERNAL_FIELDS}

    def structure(value: Any, type_: Any) -> T:
        if isinstance(value, cls):  # a nested stand-in (see above): already checked
            return value
        if not isinstance(value, Mapping):
            raise _Expected("a mapping", value)
        keys = list(value)  # (the file's order, in which the problems are said)
        # Unknown keys are set aside (and reported) so that the known fields are
        # still structured and checked: one run reports every mistake.
        extra = {k for k in value if k not in allowed}
        errors: list[Exception] = []
        # fields left out that an unknown key is a typo of (``evry: 10s``): their checks
        # would only add a consequence of that typo ("neither cron nor every")
        mistyped: set[str] = set()
        if extra:  # (one error per key: each said where it is written)
            errors.extend(ForbiddenExtraKeysError(None, cls, {key}) for key in extra)
            known = sorted(allowed)
            mistyped = {g for g in (close_field(k, known) for k in extra)
                        if g is not None and g not in value}
            value = {k: v for k, v in value.items() if k in allowed}
        failed: set[str] = set()   # fields that could not be structured
        lost: set[str] = set()     # ... of which the stand-in holds nothing of the input
        try:
            obj = hook(value, type_)
        except ClassValidationError as exc:
            errors.extend(exc.exceptions)
            retry = dict(value)
            for sub in exc.exceptions:
                name = next((getattr(n, "name", None) for n in getattr(sub, "__notes__", ())
                             if isinstance(getattr(n, "name", None), str)), None)
                if name is None or name not in retry:
                    continue
                failed.add(name)
                partial = getattr(sub, "partial", None)
                if partial is not None:
                    retry[name] = partial
                else:
                    lost.add(name)
                    del retry[name]
            try:
                obj = hook(retry, type_)
            except Exception:  # a required field is missing: nothing to stand in
                raise ClassValidationError(exc.message, _in_order(errors, keys),
                                           cls) from None
        _in_its_form(cls, errors, value, obj)
        for field in attrs.fields(cast(Any, cls)):
            if field.validator is None or field.name in failed or field.name in mistyped:
                continue
            validator = field.validator
            if any(dep in failed or dep in mistyped for dep in field.metadata.get("after", ())):
                # it compares with a field that is not as given: only its own check
                # (``max_delay: .inf`` beside ``initial_delay: .nan`` is two problems)
                validator = field.metadata.get("alone")
                if validator is None:
                    continue
            try:
                validator(obj, field, getattr(obj, field.name))
            except _FieldProblem as exc:
                exc.__notes__ = [
                    AttributeValidationNote(
                        f"Validating {cls.__qualname__} @ attribute {field.name!r}",
                        field.name,
                        field.type,
                    )
                ]
                errors.append(exc)
        if errors:
            error = ClassValidationError(f"While structuring {cls.__qualname__}",
                                         _in_order(errors, keys), cls)
            error.partial = obj  # type: ignore[attr-defined]
            error.failed = frozenset(lost)  # type: ignore[attr-defined]
            raise error
        return obj

    return structure


#: the form of the text fields no check of their own reads (their values are looked up
#: once every entry is read), said of a value that is not text
_TEXT_FORMS = {
    "store": "a file path or a postgresql:// URL",
    "source": "'module:function' (e.g. 'myapp.jobs:main')",
    "process": "the id of a process.py or workflow.py entry (e.g. 'app:handler')",
    "workflow": "the id of a workflow.py entry (e.g. 'app:report')",
    "host": "a host entry id or 'processes' / 'workflows'",
}


def _in_its_form(cls: type[Any], errors: list[Exception], value: Mapping[str, Any],
                 obj: Any) -> None:
    """Say the form of each field of ``errors`` whose value is of the wrong type for it
    (``rate: 10``: ``expected a string``) as its own check says it of a value out of its
    range (``expected a rate 'COUNT/DURATION' such as '100/1m' ...``): that check is
    asked about the value as written, the other fields as read (``obj``). A check that
    takes the value, or fails on it otherwise, leaves the type's words. A text field
    with no check (its value is looked up later) says its form from ``_TEXT_FORMS``."""
    fields = {f.name: f for f in attrs.fields(cls)}
    for error in errors:
        if not isinstance(error, _Expected) or not error.plain:
            continue
        name = next((n.name for n in getattr(error, "__notes__", ())
                     if n.__class__ is AttributeValidationNote), None)
        field = fields.get(name) if isinstance(name, str) else None
        if field is None or field.name not in value:
            continue
        written = value[field.name]
        if field.validator is None:
            form = _TEXT_FORMS.get(field.name)
            if form is not None and error.detail.startswith("expected a string,"):
                error.detail = f"expected {form}, got {written!r}"
            continue
        stand_in = copy.copy(obj)
        object.__setattr__(stand_in, field.name, written)  # (frozen: a copy's field)
        try:
            field.validator(stand_in, field, written)
        except _FieldProblem as problem:
            error.detail = problem.detail
        except Exception:  # (a check that cannot read it: the type's words)
            pass


def _in_order(errors: list[Exception], keys: list[Any]) -> list[Exception]:
    """``errors`` (of one mapping's fields) in the order of their fields in ``keys``,
    the mapping's as written: those the checks find (``start_timeout: 0``) beside those
    found as the fields are read (``stop_timeout: -1s``) and unknown fields; one of a
    field not written (a required one missing) after them."""
    where = {key: i for i, key in enumerate(keys)}

    def position(error: Exception) -> int:
        if isinstance(error, ForbiddenExtraKeysError):
            return min((where.get(k, len(keys)) for k in error.extra_fields),
                       default=len(keys))
        name = next((n.name for n in getattr(error, "__notes__", ())
                     if n.__class__ is AttributeValidationNote), None)
        return where.get(name, len(keys))

    return sorted(errors, key=position)  # (stable: one field's errors as found)


_converter = _make_converter()
