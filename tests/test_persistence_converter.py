"""The one cattrs converter: durable JSON in, typed values out, clear PayloadErrors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import sys
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import garrison
from garrison import workflow
from garrison._errors import PayloadError
from garrison.actors._values import ErrorInfo, Pid
from garrison.persistence import RawJson, from_json, structure, to_json, unstructure

json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
def test_builtins_round_trip_exactly(value: Any) -> None:
    text = to_json(value, what="a value")
    back = from_json(text)
    assert back == value
    # exact types, not just equal values (1 vs 1.0 vs True)
    assert json.dumps(back) == json.dumps(value)


@given(st.lists(st.integers(), max_size=5).map(tuple))
def test_tuples_come_back_as_lists_unless_the_hint_says_tuple(value: tuple[int, ...]) -> None:
    text = to_json(value, what="a tuple")
    assert from_json(text) == list(value)
    assert from_json(text, tuple[int, ...]) == value


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.IntEnum):
    S = 1
    L = 3


@attrs.frozen
class Line:
    sku: str
    qty: int = 1


@dataclasses.dataclass(frozen=True)
class Address:
    street: str
    city: str


@attrs.frozen
class Order:
    id: uuid.UUID
    lines: list[Line]
    owner: Pid
    color: Color
    size: Size
    placed: dt.datetime
    ship_to: Address
    pair: tuple[int, str]
    note: str | None = None
    extra: dict[str, Any] = attrs.Factory(dict)


def _order() -> Order:
    return Order(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        lines=[Line("apple", 2), Line("pear")],
        owner=Pid("workflows", "order-17"),
        color=Color.BLUE,
        size=Size.L,
        placed=dt.datetime(2026, 11, 21, 12, 30, tzinfo=dt.UTC),
        ship_to=Address("Main St 1", "Springfield"),
        pair=(1, "a"),
        extra={"gift": True, "tags": ["x"]},
    )


def test_attrs_class_is_restored_from_its_hint() -> None:
    order = _order()
    text = to_json(order, what="argument 1 of workflow 'app:order'")
    plain = json.loads(text)
    assert plain["owner"] == "workflows/order-17"
    assert plain["placed"] == "2026-11-21T12:30:00+00:00"
    assert plain["id"] == "12345678-1234-5678-1234-567812345678"
    assert plain["color"] == "blue"
    assert plain["pair"] == [1, "a"]
    assert from_json(text, Order) == order
    assert from_json(text, Order | None) == order
    assert from_json("null", Order | None) is None
    assert from_json(to_json([order], what="x"), list[Order]) == [order]


def test_values_of_garrison_round_trip() -> None:
    error = ErrorInfo("ValueError", "bad", "Traceback ...")
    assert from_json(to_json(error, what="e"), ErrorInfo) == error
    pid = Pid("processes", "7")
    assert from_json(to_json(pid, what="p"), Pid) == pid


def test_datetimes_are_normalised_to_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    when = dt.datetime(2026, 1, 1, 13, 0, tzinfo=cet)
    text = to_json(when, what="a time")
    assert text == '"2026-01-01T12:00:00+00:00"'
    back = from_json(text, dt.datetime)
    assert back == when and back.tzinfo == dt.UTC


@pytest.mark.parametrize("hours", [14, -14])
def test_an_aware_datetime_no_utc_date_holds_is_named_with_where_it_is(hours: int) -> None:
    """probe p23: ``datetime.min`` at +14:00 (or ``max`` at -14:00), stored in UTC, is
    before year 1 (after 9999): it read ``converting a value of type list failed:
    OverflowError: date value out of range``, naming neither the value nor where it
    was. A PayloadError names both, as for any value that does not convert."""
    zone = dt.timezone(dt.timedelta(hours=hours))
    when = (dt.datetime.min if hours > 0 else dt.datetime.max).replace(tzinfo=zone)
    with pytest.raises(PayloadError) as info:
        to_json([1, {"at": when}], what="the arguments of workflow 'app:wf'")
    message = str(info.value)
    assert message.startswith("cannot store the arguments of workflow 'app:wf': a value of "
                              "type datetime.datetime at [1]['at'] cannot be converted")
    assert when.isoformat() in message and "UTC" in message, message
    assert "OverflowError" not in message
    with pytest.raises(PayloadError, match=r"type datetime\.datetime cannot be converted"):
        to_json(when, what="x")


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        (b"raw", "bytes"),
        (lambda: 1, "function"),
        (object(), "object"),
        (dt.date(2026, 1, 1), "datetime.date"),
        ({1: "a"}, "int"),
        ([1, {"deep": {3}}], "set"),
        (Line("a", {4}), "set"),  # type: ignore[arg-type]
    ],
)
def test_unconvertible_values_raise_payload_error_naming_type_and_what(
    value: object, type_name: str
) -> None:
    what = "argument 2 of workflow 'app.orders:order_workflow'"
    with pytest.raises(PayloadError) as info:
        to_json(value, what=what)
    message = str(info.value)
    assert what in message
    assert f"type {type_name}" in message
    assert isinstance(info.value, TypeError)  # PayloadError is a TypeError too
    with pytest.raises(PayloadError):
        unstructure(value, what=what)


def test_payload_error_names_where_it_was_found() -> None:
    """It said ``(inside a list)`` of what was an argument list: the field is named."""
    with pytest.raises(PayloadError, match=r"a value of type set at qty cannot"):
        to_json(Line("a", {4}), what="x")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"a value of type set at \[1\]\['lines'\]\[0\]"
                                           r"\.qty cannot"):
        to_json([1, {"lines": [Line("a", {4})]}], what="x")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"a value of type int at the top \(a key of the "
                                           r"dict there\) cannot be converted to JSON: JSON "
                                           r"object keys"):
        to_json({1: 2}, what="x")
    with pytest.raises(PayloadError, match=r"a value of type int at \[0\]\['a'\] \(a key of "
                                           r"the dict there\) cannot"):
        to_json([{"a": {3: 4}}], what="x")


def test_a_coroutine_is_named_as_a_missing_await() -> None:
    """An activity called without ``await`` gives a coroutine: ``a value of type
    coroutine`` did not say what went wrong."""

    async def fetch() -> int:
        return 1

    for value, where in ((None, ""), ([], " at \\[0\\]")):
        coro = fetch()
        try:
            with pytest.raises(PayloadError, match=f"a value of type coroutine{where} "
                                                   r"\(a coroutine: a missing await\?\) "
                                                   "cannot be converted to JSON"):
                to_json(coro if value is None else [coro], what="x")
        finally:
            coro.close()
    with pytest.raises(PayloadError) as info:
        to_json(object(), what="x")
    assert "await" not in str(info.value)


def test_an_int_too_long_for_text_and_a_value_nested_too_deep_are_named() -> None:
    """helper-208: they read ``converting a value of type list failed: ValueError:
    Exceeds the limit (4300 digits)...`` (the argument list named, not the int) or
    ``RecursionError: maximum recursion depth exceeded``, and as a lone value the bare
    ValueError text; API.md: a PayloadError names what could not be converted."""
    big = 10 ** 5000
    limit = sys.get_int_max_str_digits()
    said = (f"an int{{}} has more than {limit} digits, more than Python turns into text "
            "(store it as a string, or raise the limit with sys.set_int_max_str_digits())")
    for value, where in ((big, ""), ([1, {"a": [2, big]}], " at [1]['a'][1]"),
                         (Line("a", big), " at qty")):
        for convert in (to_json, unstructure):
            with pytest.raises(PayloadError) as info:
                convert(value, what="the result")  # type: ignore[operator]
            assert str(info.value) == "cannot store the result: " + said.format(where)
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    limit = sys.getrecursionlimit()
    looped: list[Any] = []
    looped.append({"a": looped})
    for convert in (to_json, unstructure):
        # README said a value nested deeper than Python's recursion limit (1000): 329
        # levels of lists were refused, and the message said so too; a cycle was "too deep"
        with pytest.raises(PayloadError) as info:
            convert(deep, what="x")  # type: ignore[operator]
        assert str(info.value) == (
            "cannot store x: a value of type list is nested 5001 levels deep (lists, "
            "dicts and objects one inside another), too deep to convert to JSON: "
            "converting takes three Python frames a level of lists and two a level of "
            f"dicts and objects, within Python's recursion limit of {limit} (some "
            f"{limit // 3} levels of lists)")
        with pytest.raises(PayloadError) as info:
            convert(looped, what="x")  # type: ignore[operator]
        assert str(info.value) == ("cannot store x: a value of type list holds itself (a "
                                   "list, dict or object inside itself): JSON has no form "
                                   "for it")


def test_restoring_a_mismatch_reads_like_cattrs_transform_error() -> None:
    with pytest.raises(PayloadError) as info:
        from_json('{"sku": "a", "qty": "many"}', Line, what="the input")
    assert str(info.value) == ('cannot restore the input as Line: field \'qty\': expected an '
                                'integer, got a string "many"')


@dataclasses.dataclass
class _Item:
    sku: str
    qty: int


@dataclasses.dataclass
class _Order:
    id: str
    total: int
    items: list[_Item] = dataclasses.field(default_factory=list)


_ARG = "argument 1 (order) of workflow orders:order_workflow"


@pytest.mark.parametrize("value, hint, said", [
    ({"id": "o-17", "totl": 30}, _Order,
     "as _Order: field 'total': required field missing; extra fields found (totl)"),
    ({"id": "o-17", "total": "many"}, _Order,
     "as _Order: field 'total': expected an integer, got a string \"many\""),
    ({"id": "o", "total": 1, "items": [{"sku": "a", "qty": "z"}]}, _Order,
     "as _Order: field 'items[0].qty': expected an integer, got a string \"z\""),
    ({"id": "o", "total": 1, "items": [5]}, _Order,
     "as _Order: field 'items[0]': expected a JSON object"),
    (1, dict[str, Any], "as dict[str, Any]: expected a JSON object, got int 1"),
    (1, list[int], "as list[int]: expected an array, got an integer 1"),
    (["a"], list[int], "as list[int]: at [0]: expected an integer, got a string \"a\""),
    ([1, "a", 3], tuple[int, str],
     'as tuple[int, str]: expected 2 values (int, str), got 3: [1, "a", 3]'),
    ([1], tuple[int, str], "as tuple[int, str]: expected 2 values (int, str), got 1: [1]"),
    ([[1, "a"], [2]], list[tuple[int, str]],
     "as list[tuple[int, str]]: at [1]: expected 2 values (int, str), got 1: [2]"),
    ([1, 2], tuple[int, str], "as tuple[int, str]: at [1]: expected a string, got an "
                              "integer 2"),
])
def test_a_nested_mismatch_names_the_field_apart_from_the_workflow(
        value: Any, hint: Any, said: str) -> None:
    """The path inside an argument was glued onto the workflow's name
    (``... @ argument 1 (order) of workflow orders:order_workflow.total``), and a
    non-object for a ``dict[str, Any]`` leaked ``AttributeError: 'int' object has no
    attribute 'items'`` and ``typing.``."""
    with pytest.raises(PayloadError) as info:
        structure(value, hint, what=_ARG)
    assert str(info.value) == f"cannot restore {_ARG} {said}"


def test_extra_keys_are_forbidden() -> None:
    with pytest.raises(PayloadError, match="extra fields found"):
        from_json('{"sku": "a", "qty": 1, "color": "red"}', Line)


def test_bad_json_and_bad_pid_raise_payload_error() -> None:
    with pytest.raises(PayloadError, match="invalid JSON"):
        from_json("{nope")
    with pytest.raises(PayloadError, match="Pid"):
        from_json('"no-slash"', Pid)


@attrs.frozen
class _Notice:
    to: Pid


def test_a_pid_is_restored_from_its_text_and_anything_else_is_told_so() -> None:
    """A Pid is an attrs class stored as its ``host/id`` text: a bad one was told
    ``expected a JSON object with its fields (host, id)``, and that object then
    ``expected a 'host/id' string``; nested, only ``expected Pid``."""
    assert structure("workflows/o-1", Pid) == Pid("workflows", "o-1")
    assert structure({"to": "a/b/c"}, _Notice) == _Notice(Pid("a", "b/c"))
    for value, hint, said in [
            ("badpid", Pid, """as Pid: expected a pid as its 'host/id' text, got a string """
                            '"badpid"'),
            ({"host": "workflows", "id": "x"}, Pid, "as Pid: expected a pid as its 'host/id' "
             'text, got an object {"host": "workflows", "id": "x"}'),
            (None, Pid, "expected a pid as its 'host/id' text, got null"),
            ("/x", Pid, "expected a pid as its 'host/id' text, got a string \"/x\""),
            ({"to": {"host": "a", "id": "b"}}, _Notice,
             "field 'to': expected a pid as its 'host/id' text, got an object {"),
            (["a/b", 5], list[Pid], "at [1]: expected a pid as its 'host/id' text, got an "
             "integer 5")]:
        with pytest.raises(PayloadError) as info:
            structure(value, hint, what="argument 1")
        assert said in str(info.value), str(info.value)
        assert "its fields" not in str(info.value)


def test_a_type_no_value_is_restored_as_says_which_types_are_durable() -> None:
    """cattrs' advice, ``Register a structure hook for it``, is for its converter, which
    is garrison's own: no application can."""
    for value, hint in [("1.5", decimal.Decimal), (["2026-01-02"], list[dt.date]),
                        ([1, "2"], tuple[int, decimal.Decimal])]:
        with pytest.raises(PayloadError) as info:
            structure(value, hint, what="argument 1")
        said = str(info.value)
        assert "no value is restored as " in said and "are durable" in said, said
        assert "Register" not in said, said


def test_raw_json_and_str_enum_keys() -> None:
    class Key(enum.StrEnum):
        A = "a"

    assert to_json({Key.A: 1}, what="x") == '{"a":1}'
    assert RawJson("[1]").text == "[1]"


def test_events_and_messages_round_trip() -> None:
    from garrison.actors._values import Event, EventKind, Message

    event = Event(EventKind.EXIT, Pid("workflows", "child"), None, ErrorInfo("KeyError", "k"))
    assert from_json(to_json(event, what="an event"), Event) == event
    message = Message("order.paid", {"id": 1}, Pid("processes", "3"), "m-1")
    assert from_json(to_json(message, what="a message"), Message) == message


def test_an_int_too_long_for_text_is_a_payload_error() -> None:
    """An int of more than 4,300 digits (Python's limit for its text) failed with a
    bare ValueError from the JSON fast path, not the PayloadError naming the value."""
    import pytest

    from garrison import PayloadError
    from garrison.persistence import to_json

    with pytest.raises(PayloadError, match="the result of wf"):
        to_json(10 ** 5000, what="the result of wf")


@pytest.mark.parametrize("value, hint, said", [
    ({"a": 1}, str, 'expected a string, got an object {"a": 1}'),
    ([1, 2], str, "expected a string, got an array [1, 2]"),
    (5, str, "expected a string, got an integer 5"),
    (None, str, "expected a string, got null"),
    ("5", int, 'expected an integer, got a string "5"'),
    (5.5, int, "expected an integer, got a number 5.5"),
    ("5", float, 'expected a number, got a string "5"'),
    ("false", bool, 'expected a boolean (true or false), got a string "false"'),
    (0, bool, "expected a boolean (true or false), got an integer 0"),
    (3, str | None, "expected a string, got an integer 3"),
])
def test_a_scalar_hint_takes_only_its_own_json_type(value: Any, hint: Any, said: str) -> None:
    """cattrs' own hooks for the scalars coerce: ``str`` took any JSON value as its
    ``str()`` (``{"a": 1}`` arrived as ``"{'a': 1}"``, null as ``'None'``), ``bool``
    took ``"false"`` as True, ``int`` took ``"5"`` and ``5.5`` (as 5). A subclass that
    is no enum was built from any value alike (``class Sku(str)`` got ``"{'a': 1}"``)."""
    with pytest.raises(PayloadError) as info:
        structure(value, hint, what=_ARG)
    name = hint.__name__ if isinstance(hint, type) else "str | None"
    assert str(info.value) == f"cannot restore {_ARG} as {name}: {said}"


class _Color(enum.StrEnum):
    RED = "red"


class _Size(enum.IntEnum):
    S = 1


class _Sku(str):
    pass


class _Cents(int):
    pass


@pytest.mark.parametrize("value, hint", [({"a": 1}, _Sku), (None, _Sku), ([1, 2], _Sku),
                                         ("5", _Cents), (5.9, _Cents)])
def test_a_subclass_of_a_scalar_takes_only_its_json_type(value: Any, hint: Any) -> None:
    """``class Sku(str)`` took any value as its ``str()``, ``class Cents(int)`` took
    ``"5"`` and ``5.9`` (as 5): the check of the scalar, then the subclass (found by an
    adversarial review)."""
    with pytest.raises(PayloadError, match=f"as {hint.__name__}: expected an? "):
        structure(value, hint, what=_ARG)


def test_scalars_of_their_own_type_and_their_subclasses_still_restore() -> None:
    """An integer is a number (``5`` for a float is ``5.0``); enums of ``str`` and
    ``int`` keep being built from their values; a boolean is an integer and a number
    (Python's ``bool`` is an ``int``: ``-> int`` returning ``True`` type-checks), as
    it was: 1 and 1.0."""
    assert structure(5, float) == 5.0 and type(structure(5, float)) is float
    assert structure(True, int) == 1 and type(structure(True, int)) is int
    assert structure(False, float) == 0.0 and type(structure(False, float)) is float
    assert structure("x", _Sku) == "x" and type(structure("x", _Sku)) is _Sku
    assert structure(5, _Cents) == 5 and type(structure(5, _Cents)) is _Cents
    assert (structure("x", str), structure(7, int), structure(True, bool)) == ("x", 7, True)
    assert structure("red", _Color) is _Color.RED
    assert structure(1, _Size) is _Size.S
    assert structure({"sku": "a", "qty": 2}, Line) == Line("a", 2)


@dataclasses.dataclass
class _Point:
    x: int
    y: int


def test_a_union_with_a_scalar_is_restored_by_the_values_json_type() -> None:
    """``int | str`` (a workflow's parameter, an activity's return annotation) was
    cattrs' StructureHandlerNotFoundError: a workflow taking one could not start, and an
    activity returning one failed for good after its effect. A value is the member of
    its own JSON type (``true`` a bool only), an integer a float where there is no int,
    else the first other member that takes it."""
    from typing import Optional, Union

    assert structure(5, int | str) == 5 and structure("5", int | str) == "5"
    assert structure(5, Union[int, str]) == 5  # noqa: UP007 (the spelling a user may use)
    assert structure(3, float | str) == 3.0 and type(structure(3, float | str)) is float
    assert structure(True, bool | int) is True
    assert structure(None, int | str | None) is None
    assert structure(None, Optional[int]) is None  # noqa: UP045
    assert structure({"x": 1, "y": 2}, int | _Point) == _Point(1, 2)
    assert structure([1, "a"], list[int | str]) == [1, "a"]
    assert structure([1, 2], int | list[int]) == [1, 2]
    for value, hint, said in [
            (True, int | str, "expected an integer or a string, got a boolean true"),
            (None, int | str, "expected an integer or a string, got null"),
            ({"x": 1}, int | _Point, "expected an integer or _Point, got an object"),
            ([1, 2.5], list[int | str], "expected an integer or a string, got a number 2.5")]:
        with pytest.raises(PayloadError, match=said):
            structure(value, hint, what="argument 1")


@attrs.define
class _Card:
    last4: str


@attrs.define
class _Iban:
    last4: str


def test_a_union_of_records_nothing_tells_apart_says_the_annotation_cannot_restore() -> None:
    """``_Card | _Iban`` of the same fields refused every value, a valid ``_Card``
    too, with cattrs' bare ``TypeError: Could not disambiguate ...``."""
    for value, hint in [({"last4": "1234"}, _Card | _Iban),
                        ([{"last4": "1234"}], list[_Card | _Iban])]:
        with pytest.raises(PayloadError) as info:
            structure(value, hint, what="argument 1 (pay) of workflow app:pay")
        said = str(info.value)
        assert said.startswith("cannot restore argument 1 (pay) of workflow app:pay: its "
                               "annotation "), said
        assert "itself cannot be restored (TypeError: Could not disambiguate" in said, said
        assert said.endswith("give each class a field the others lack, or a field of its "
                             'own Literal value (kind: Literal["a"] = "a"), or annotate a '
                             "single class"), said


class _Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


@dataclasses.dataclass
class _Customer:
    tier: _Tier


def test_a_value_no_enum_member_has_is_refused_naming_the_values_and_the_one_given() -> None:
    """``field 'tier': expected Tier`` said neither what was given nor what is taken."""
    for value, hint, said in [
            ({"tier": "platinum"}, _Customer,
             """field 'tier': expected one of _Tier's values ("gold", "silver"), got 'platinum'"""),
            ("platinum", _Tier,
             """_Tier: expected one of _Tier's values ("gold", "silver"), got 'platinum'"""),
            (5, _Tier, """got 5""")]:
        with pytest.raises(PayloadError) as info:
            structure(value, hint, what="argument 1")
        assert said in str(info.value), str(info.value)


class _Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class _Grade(enum.Enum):  # (an enum of int values, not an IntEnum)
    S = 1
    M = 2


@attrs.frozen
class _Counts:
    by_day: dict[int, int]
    by_id: dict[uuid.UUID, _Level] | None = None


@pytest.mark.parametrize("value, hint, text", [
    ({1: "a", -2: "b"}, dict[int, str], '{"1":"a","-2":"b"}'),
    ({uuid.UUID(int=7): _Level.HIGH},
     dict[uuid.UUID, _Level], '{"00000000-0000-0000-0000-000000000007":2}'),
    ({_Level.LOW: _Counts({3: 4})}, dict[_Level, _Counts],
     '{"1":{"by_day":{"3":4},"by_id":null}}'),
    ({_Grade.M: 1.5, _Grade.S: 0.0}, dict[_Grade, float], '{"2":1.5,"1":0.0}'),
    ({2.5: True, 1.0: False}, dict[float, bool], '{"2.5":true,"1.0":false}'),
    ({True: 1}, dict[bool, int] | None, '{"true":1}'),
    ([{1: [2]}, {}], list[dict[int, list[int]]], '[{"1":[2]},{}]'),
    (({1: 2}, "x"), tuple[dict[int, int], str], '[{"1":2},"x"]'),
    ({"a": {1: 2}}, dict[str, dict[int, int]], '{"a":{"1":2}}'),
    (_Counts({1: 2}, {uuid.UUID(int=1): _Level.LOW}), _Counts,
     '{"by_day":{"1":2},"by_id":{"00000000-0000-0000-0000-000000000001":1}}'),
])
def test_a_dict_declared_with_keys_of_another_type_than_str_round_trips(
        value: Any, hint: Any, text: str) -> None:
    """JSON object keys are strings: a dict whose declared type gives its keys another
    type is stored with each key as its JSON text, and restored by that type."""
    stored = to_json(value, what="x", hint=hint)
    assert stored == text
    back = from_json(stored, hint)
    assert back == value
    assert [type(k) for k in _keys(back)] == [type(k) for k in _keys(value)]


def _keys(value: Any) -> list[Any]:
    """The keys of every dict in ``value`` (lists, tuples and records walked), in order."""
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in [key, *_keys(item)]]
    if isinstance(value, list | tuple):
        return [k for item in value for k in _keys(item)]
    if attrs.has(type(value)):
        return _keys(attrs.asdict(value, recurse=False))
    return []


def test_a_record_field_of_int_keys_stored_by_an_older_release_restores() -> None:
    """An attrs field ``dict[int, int]`` was stored as now (json.dumps wrote its keys as
    text), but restoring it refused the key ``"1"`` (not an integer): such a journal
    record replays now."""
    assert from_json('{"by_day":{"1":2,"-3":4},"by_id":null}', _Counts) == _Counts({1: 2, -3: 4})


def test_a_dict_of_non_str_keys_without_a_declared_key_type_is_still_refused() -> None:
    for hint in (Any, dict, dict[Any, int], list[dict[str, int]]):
        value: Any = [{1: 2}] if hint == list[dict[str, int]] else {1: 2}
        with pytest.raises(PayloadError, match=r"cannot store the thing: a value of type "
                           r"int at .*\(a key of the dict there\).*JSON object keys must "
                           r"be str"):
            to_json(value, what="the thing", hint=hint)


def test_a_declared_key_without_a_json_text_or_a_key_of_another_type_is_refused() -> None:
    with pytest.raises(PayloadError, match=r"a value of type tuple at the top \(a key of "
                       r"the dict there\) cannot be converted to JSON: JSON object keys "
                       r"must be str"):
        to_json({(1, 2): 3}, what="x", hint=dict[tuple[int, int], int])
    for text, said in (('{"a":1}', '''at ['a']: expected an integer, got a string "a"'''),
                       ('{"1.5":1}', "at [1.5]: expected an integer, got a number 1.5"),
                       ("[1]", "expected a JSON object, got list [1]")):
        with pytest.raises(PayloadError) as info:
            from_json(text, dict[int, int], what="x")
        assert str(info.value).startswith("cannot restore x as dict[int, int]: ")
        assert str(info.value).endswith(said), info.value


#: a surrogate pair held as two code points, as ``'surrogatepass'`` decoding gives it
_SPLIT = "\ud83d\ude00"


def test_a_surrogate_pair_held_as_two_code_points_is_refused_naming_where() -> None:
    """JSON text writes an emoji as the escapes of its surrogate pair, and reading them
    back joins them: a str holding the pair as two code points was stored so, and came
    back as one character (the live run saw 2, a replay 1)."""
    for value, where in ((_SPLIT, "the str holds"), ({"a": [1, "x" + _SPLIT]}, "at ['a'][1]"),
                         ({_SPLIT: 1}, "at the top (a key of the dict there)"),
                         (Line(_SPLIT), "at sku"), ((1, _SPLIT), "at [1]")):
        with pytest.raises(PayloadError) as info:
            to_json(value, what="the payload")
        said = str(info.value)
        assert said.startswith(f"cannot store the payload: {'' if value is _SPLIT else 'the str '}"
                               f"{where}"), said
        assert "holds the surrogate pair '\\ud83d\\ude00' as two code points" in said, said
        assert "read back as the one character '\U0001f600'" in said, said
    # what JSON gives back exactly still round-trips: an emoji (one code point), lone
    # surrogates (in either order), and text that spells the escapes after a backslash
    for value in ("\U0001f600", "\ud83d", "\ude00\ud83d", "\\ud83d\\ude00",
                  "\\\U0001f600", ["\U0001f600", {"\ud83d": "\\ude00"}]):
        assert from_json(to_json(value, what="x")) == value


def test_an_errors_texts_store_a_surrogate_pair_as_its_character() -> None:
    """An exception's message quoting such text is no value to refuse: the workflow's
    error (its end) is stored with the pair joined, as it was before."""
    error = ErrorInfo("ValueError", "bad " + _SPLIT + "\ud800", "Traceback ... " + _SPLIT)
    assert from_json(to_json(error, what="e"), ErrorInfo) == ErrorInfo(
        "ValueError", "bad \U0001f600\ud800", "Traceback ... \U0001f600")


@garrison.activity
async def _split_text() -> str:
    return _SPLIT


async def _stores_split(where: str) -> str:
    if where == "activity":
        try:
            await _split_text()
        except garrison.ActivityError as exc:
            return str(exc)
    else:
        try:
            workflow.set_state("k", [_SPLIT])
        except PayloadError as exc:
            return str(exc)
    return "stored"


async def test_a_surrogate_pair_as_two_code_points_is_refused_where_a_workflow_stores_it(
        node: garrison.Node, autojump_clock: Any) -> None:
    """An activity's result, state, a message and an argument: each is refused where it
    is stored, rather than read back by a replay (or ``handle.state``) as another str."""
    for where, said in (("activity", "the result of activity"), ("state", "state 'k'")):
        await node.start_workflow(_stores_split, where, id=where)
        got = await node.workflow(where).result()
        assert f"cannot store {said}" in got and "surrogate pair" in got, got
    with pytest.raises(PayloadError, match="at \\[0\\] holds the surrogate pair"):
        await node.workflow("state").signal("t", [_SPLIT])
    with pytest.raises(PayloadError, match="at \\[0\\] holds the surrogate pair"):
        await node.start_workflow(_stores_split, _SPLIT, id="arg")


class _Shape(enum.Enum):  # (values that are tuples: stored as JSON arrays)
    S = (1, "small")
    L = (3, "large")


class _Spot(NamedTuple):  # (its annotations are strings here: __future__ annotations)
    x: int
    label: str = ""


@dataclasses.dataclass
class _Placed:
    shape: _Shape
    at: _Spot


def test_an_enum_of_tuple_values_round_trips() -> None:
    """``[1, "small"]`` was stored and then no member's value (a tuple is no list)."""
    value = _Placed(_Shape.L, _Spot(1, "a"))
    text = to_json([value, _Shape.S], what="x")
    assert text == '[{"shape":[3,"large"],"at":[1,"a"]},[1,"small"]]'
    assert from_json(text, tuple[_Placed, _Shape]) == (value, _Shape.S)
    with pytest.raises(PayloadError, match=r"expected one of _Shape's values \(\[1, "
                       r'"small"\], \[3, "large"\]\), got \[2, \'medium\'\]'):
        from_json('[2, "medium"]', _Shape, what="x")


def test_a_named_tuple_with_annotations_as_strings_is_restored() -> None:
    """Under ``from __future__ import annotations`` a NamedTuple was refused: ``unknown
    error (Unsupported type: ForwardRef('int'))``; its types resolve as a dataclass's."""
    back = from_json(to_json(_Spot(2, "b"), what="x"), _Spot)
    assert back == _Spot(2, "b") and type(back) is _Spot
    with pytest.raises(PayloadError, match=r"as _Spot: at \[0\]: expected an integer, "
                       'got a string "2"'):
        from_json('["2", "b"]', _Spot, what="x")



def test_a_fixed_tuple_or_named_tuple_given_no_array_says_so() -> None:
    """A string was taken for its characters (``expected 2 values (int, str), got 1:
    "x"``), an object for its keys (``at [0]: expected an integer, got a string "x"``)."""
    for value, hint, said in [
            ("x", _Spot, 'as _Spot: expected an array of 2 values (int, str), got a string "x"'),
            ({"x": 1, "y": "a"}, _Spot, "expected an array of 2 values (int, str), got an "
             'object {"x": 1, "y": "a"}'),
            ({"a": 1, "b": "c"}, tuple[int, str], "as tuple[int, str]: expected an array of "
             "2 values (int, str), got an object"),
            ({"p": 5}, dict[str, tuple[int, str]], "at ['p']: expected an array of 2 values "
             "(int, str), got an integer 5")]:
        with pytest.raises(PayloadError) as info:
            structure(value, hint, what="x")
        assert said in str(info.value), str(info.value)


def test_an_array_hint_given_no_array_or_bytes_is_refused_not_converted() -> None:
    """A string given where a list, tuple or set is declared became its characters
    (``"ab"`` -> ``['a', 'b']``), an object its keys, a number given for ``bytes`` so
    many zero bytes (``5`` -> ``b'\\x00' * 5``), a list of numbers those bytes: a quiet
    wrong value where any other mismatch is a ``PayloadError``. ``bytes`` is no JSON
    value (a store refuses one), so nothing is restored as it."""
    import collections
    from collections.abc import MutableSet, Sequence
    from collections.abc import Set as AbstractSet

    for value, hint, said in [
            ("ab", list[str], 'as list[str]: expected an array, got a string "ab"'),
            ("ab", list, 'expected an array, got a string "ab"'),
            ({"a": 1}, tuple[str, ...], 'expected an array, got an object {"a": 1}'),
            ("ab", set[str], 'expected an array, got a string "ab"'),
            ("ab", frozenset[str], 'expected an array, got a string "ab"'),
            ("ab", Sequence[str], 'expected an array, got a string "ab"'),
            ("ab", AbstractSet[str], 'expected an array, got a string "ab"'),
            (3, MutableSet[int], "expected an array, got an integer 3"),
            ("ab", collections.deque[str], 'expected an array, got a string "ab"'),
            ({"p": "xy"}, dict[str, list[str]], "at ['p']: expected an array, got a string"),
            ([["a"], "bc"], list[list[str]], 'at [1]: expected an array, got a string "bc"'),
            (5, bytes, "no value is restored as bytes"),
            ([1, 2], bytes, "no value is restored as bytes"),
            ([1, 2], memoryview, "no value is restored as memoryview")]:
        with pytest.raises(PayloadError) as info:
            structure(value, hint, what="x")
        assert said in str(info.value), (hint, str(info.value))
    # what an array gives is as before: its container, each value restored by its type
    assert structure(["a", "b"], list[str]) == ["a", "b"]
    assert structure([1, 2], tuple[int, ...]) == (1, 2)
    assert structure([1, 2], Sequence[int]) == (1, 2)
    assert structure([1, 1], set[int]) == {1}
    assert structure([1], AbstractSet[int]) == frozenset({1})
    assert structure([1], MutableSet[int]) == {1}
    assert structure(["a"], collections.deque[str]) == collections.deque(["a"])
    assert structure([[1]], list[frozenset[int]]) == [frozenset({1})]
    assert structure(["2026-01-01T00:00:00+00:00"], list[dt.datetime]) == [
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    assert structure([1, "x"], list) == [1, "x"] and structure((1,), list[Any]) == [1]
    assert structure([], tuple[()]) == ()  # (no array of values: cattrs' own, as before)
    with pytest.raises(PayloadError):
        structure([1, 2], tuple[()], what="x")
    with pytest.raises(PayloadError, match=r"at \[1\]: expected an integer, got a string"):
        structure([1, "2"], list[int], what="x")
    with pytest.raises(PayloadError, match="expected an integer, got a string"):
        structure([1, "2"], set[int], what="x")


_picks: list[Any] = []


@garrison.activity
async def _pick(shape: _Shape) -> _Shape:
    _picks.append(("ran", shape))
    return shape


async def _shaped(shape: _Shape, at: _Spot) -> tuple[_Shape, _Spot]:
    picked = await _pick(shape)
    _picks.append(("saw", picked, at))
    await workflow.sleep("1h")
    return picked, at


async def test_an_enum_of_tuple_values_and_a_named_tuple_cross_a_workflow_and_replay(
        tmp_path: Path, autojump_clock: Any) -> None:
    """As an argument, an activity's result and the workflow's result, in the live run
    and in the replay of the next node: the argument was refused at the start, the
    activity's result failed the workflow after the activity ran."""
    _picks.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_shaped, _Shape.S, _Spot(1, "a"), id="w")
        await trio.sleep(60)  # (the activity ran; the workflow sleeps)
    async with garrison.open_node(store=db) as node:
        result = await node.workflow("w").result()
    assert result == (_Shape.S, _Spot(1, "a")) and type(result[1]) is _Spot
    saw = ("saw", _Shape.S, _Spot(1, "a"))  # (the live run, then the replay)
    assert _picks == [("ran", _Shape.S), saw, saw]
    assert [type(at) for *_, at in _picks[1:]] == [_Spot, _Spot]


def test_keys_of_a_union_with_str_or_an_annotated_str_read_as_before() -> None:
    """Review of the dict-key change: any key type that was not a plain class (a union,
    ``Optional[str]``, ``Annotated[str, ...]``) was read as JSON text, so a dict stored
    by an older release came back changed (``{"null": 1}`` as ``{None: 1}``, ``"1"`` as
    ``1``) or was refused. Only number-like key types are read so; a declared key type
    that is no such one takes str keys only, as before."""
    from typing import Annotated, Optional

    from garrison.persistence._converter import from_json

    assert from_json('{"123": 1}', dict[Optional[str], int]) == {"123": 1}  # noqa: UP045
    assert from_json('{"null": 1}', dict[Optional[str], int]) == {"null": 1}  # noqa: UP045
    assert from_json('{"1": 1}', dict[str | int, int]) == {"1": 1}
    assert from_json('{"123": 1}', dict[Annotated[str, "id"], int]) == {"123": 1}
    assert from_json('{"1": "a", "null": "b"}', dict[int | None, str]) == {1: "a", None: "b"}
    assert from_json('{"7": 1}', dict[Annotated[int, "n"], int]) == {7: 1}
    for hint, value in ((dict[int | str, str], {1: "a", "1": "b"}),
                        (dict[Any, dict[int, str]], {1: {2: "x"}})):
        with pytest.raises(PayloadError, match="a key of the dict"):
            to_json(value, what="v", hint=hint)
    assert to_json({"a": {2: "x"}}, what="v", hint=dict[str, dict[int, str]]) == \
        '{"a":{"2":"x"}}'


def test_a_naive_datetime_round_trips_naive_and_an_aware_one_in_utc() -> None:
    """A datetime is durable (API.md: "datetimes"), a naive one too: it was refused as
    ambiguous, though storing its fields and reading them back is exact. An aware one
    comes back as the same instant in UTC, as before; the two never compare equal."""
    naive = dt.datetime(2024, 1, 1, 12, 30, 5, 250)
    assert to_json(naive, what="x") == '"2024-01-01T12:30:05.000250"'
    assert structure(from_json(to_json(naive, what="x")), dt.datetime) == naive
    assert structure(from_json(to_json(naive, what="x")), dt.datetime).tzinfo is None
    berlin = dt.datetime(2024, 1, 1, 13, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    back = structure(from_json(to_json(berlin, what="x")), dt.datetime)
    assert back == berlin and back.tzinfo is dt.UTC
    both = from_json(to_json([naive, berlin], what="x"))
    assert structure(both, list[dt.datetime]) == [naive, berlin]
