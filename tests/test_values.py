import datetime as dt
import decimal
import pickle

import attrs
import pytest

import garrison
from garrison import ErrorInfo, Event, EventKind, Message, Pid, parse_duration


def test_pid_roundtrip_order_hash():
    a, b = Pid("processes", "x.1"), Pid("processes", "x.2")
    assert Pid.parse(str(a)) == a
    assert str(Pid("workflows", "order/17")) == "workflows/order/17"
    assert Pid.parse("workflows/order/17") == Pid("workflows", "order/17")
    assert a < b and sorted([b, a]) == [a, b]
    assert len({a, Pid("processes", "x.1")}) == 1


@pytest.mark.parametrize("bad", ["", "nohost", "/id", "host/", 42])
def test_pid_parse_rejects(bad):
    with pytest.raises(ValueError, match="pid"):
        Pid.parse(bad)


def test_pid_host_validated():
    with pytest.raises(ValueError, match="host"):
        Pid("a/b", "1")


def test_error_info_str_and_capture():
    assert str(ErrorInfo("ValueError", "boom")) == "ValueError: boom"
    try:
        raise KeyError("k")
    except KeyError as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.type == "KeyError" and "Traceback" in info.traceback


def test_a_recorded_traceback_keeps_its_ends_within_a_bound() -> None:
    """A failure's traceback carries the traceback of what it awaited as a note (a
    child's WorkflowFailed, an activity's ActivityError), which carried its own: a tree
    of workflows failing up its levels stored ever longer tracebacks, unbounded. One is
    kept within TRACEBACK_LIMIT characters: its start (the outermost frames) and its end
    (the innermost, the error, its notes), saying how much was left out."""
    from garrison.actors._values import TRACEBACK_LIMIT

    error = ErrorInfo("ValueError", "deep", "x" * (3 * TRACEBACK_LIMIT))
    for level in range(40):
        try:
            raise garrison.WorkflowFailed(f"level-{level}", error)
        except garrison.WorkflowFailed as exc:
            error = ErrorInfo.from_exception(exc)
        assert len(error.traceback) <= TRACEBACK_LIMIT + 100, (level, len(error.traceback))
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "characters of the traceback left out" in error.traceback
    assert "WorkflowFailed: workflow 'level-39' failed" in error.traceback


def test_event_ok():
    pid = Pid("processes", "1")
    assert Event(EventKind.EXIT, pid, result=3).ok
    assert not Event(EventKind.EXIT, pid, error=ErrorInfo("E", "m")).ok
    assert EventKind.EXIT == "EXIT"


def test_a_message_made_any_way_holds_every_field_and_stays_frozen():
    # (Message and Pid have an __init__ of their own, not attrs': it must take the same
    # arguments, set every field and leave the value as frozen, as attrs' does)
    pid = Pid("processes", "x.1")
    trace = {"traceparent": "00-1-2-01"}
    by_position = Message("t", [1], pid, "m-1", "ref.1", trace)
    by_name = Message(topic="t", payload=[1], sender=pid, id="m-1", call_ref="ref.1",
                      trace=trace)
    for msg in (by_position, by_name):
        assert (msg.topic, msg.payload, msg.sender, msg.id, msg.call_ref, msg.trace) == (
            "t", [1], pid, "m-1", "ref.1", trace)
    assert by_position == by_name
    bare = Message("t")
    assert (bare.payload, bare.sender, bare.id, bare.call_ref, bare.trace) == (
        None, None, "", None, None)
    assert attrs.evolve(by_position, topic="u") == Message("u", [1], pid, "m-1", "ref.1")
    assert pickle.loads(pickle.dumps(by_position)) == by_position
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        by_position.topic = "v"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Message()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Message("t", nope=1)  # type: ignore[call-arg]
    made = Pid(host="processes", id="x.1")
    assert made == pid and hash(made) == hash(pid) and made.host == "processes"
    assert attrs.evolve(made, id="x.2") == Pid("processes", "x.2")
    assert pickle.loads(pickle.dumps(made)) == made
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.id = "x.3"  # type: ignore[misc]


def test_a_bad_argument_to_a_message_or_a_pid_names_the_class_as_attrs_does():
    # (their __init__ is garrison's own, not attrs': a wrong argument is still reported
    # as Message.__init__()'s or Pid.__init__()'s, never under an internal name)
    pid = Pid("processes", "x.1")
    with pytest.raises(TypeError, match=r"^Message\.__init__\(\) missing 1 required "
                                        r"positional argument: 'topic'$"):
        Message()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Message\.__init__\(\) got an unexpected "
                                        r"keyword argument 'nope'$"):
        attrs.evolve(Message("t"), nope=1)
    with pytest.raises(TypeError, match=r"^Message\.__init__\(\) takes from 2 to 7 "):
        Message("t", 1, pid, "m", "r", None, "extra")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Pid\.__init__\(\) missing 1 required "
                                        r"positional argument: 'id'$"):
        Pid("processes")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Pid\.__init__\(\) got an unexpected "
                                        r"keyword argument 'ident'$"):
        attrs.evolve(pid, ident="x.2")
    for cls in (Message, Pid):
        assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
        assert cls.__init__.__name__ == "__init__"


async def test_reply_to_non_call_is_clear():
    with pytest.raises(ValueError, match="not a call"):
        await Message("t", 1).reply(2)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(2, 2.0), (0.5, 0.5), ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
     ("2d", 172800.0), ("1h30m", 5400.0), ("1m30s500ms", 90.5), ("1.5h", 5400.0),
     ("0s", 0.0), (0, 0.0), ("0.25s", 0.25)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5x", "m5", "-1s", -1, float("nan"), None, True, "1h 30",
                                 "0", "  5s ", "1h 30m", "5 s", "1.5", ".5s", "\n5s"])
def test_bad_durations_name_the_input(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [None, True, False, decimal.Decimal("1"), [5], object()])
def test_a_duration_of_another_type_is_a_type_error_naming_it(bad):
    """probe p01: a duration given as a bool, None or a Decimal raised a plain
    ValueError, where Python raises TypeError for a value of the wrong type. It is a
    TypeError now, and still a ValueError (API.md: anything else is a ValueError naming
    the input), with the same words."""
    with pytest.raises(TypeError) as info:
        parse_duration(bad, what="sleep duration")
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"invalid sleep duration {bad!r}")
    assert "expected seconds or a string like '30s'" in str(info.value)


@pytest.mark.parametrize(("delta", "seconds"), [
    (dt.timedelta(seconds=1), 1.0), (dt.timedelta(0), 0.0), (dt.timedelta(hours=1.5), 5400.0),
    (dt.timedelta(milliseconds=250), 0.25), (dt.timedelta(days=36500), 36500 * 86400.0)])
def test_a_timedelta_is_a_duration(delta, seconds):
    """probe p01: ``workflow.sleep(timedelta(seconds=1))`` was refused; a Python user
    reaches for a timedelta first. It is its seconds."""
    assert parse_duration(delta) == seconds


def test_a_negative_timedelta_is_refused_as_a_negative_duration():
    with pytest.raises(ValueError, match=r"must be a non-negative number of seconds") as info:
        parse_duration(dt.timedelta(seconds=-1), what="timeout")
    assert not isinstance(info.value, TypeError)
    assert repr(dt.timedelta(seconds=-1)) in str(info.value)


@pytest.mark.parametrize("bad", ["1m1m", "30m1h", "1s1ms1s", "1ms1s", "\uff11s", "1\u0663s"])
def test_a_combination_takes_each_unit_once_largest_first(bad):
    """API.md: a combination like "1h30m"; anything else is a ValueError. "1m1m" read
    as two minutes, and digits of other scripts as numbers."""
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", ["\u0661\u0660\u0660/1m", "\u00b2/1m", "1/1m1m"])
def test_a_rate_takes_ascii_digits_and_a_duration_of_the_one_grammar(bad):
    """Digits of other scripts passed isdigit() (one gave a bare int() error); a bad
    DURATION now says what is wrong with it."""
    from garrison._duration import parse_rate

    with pytest.raises(ValueError) as info:
        parse_rate(bad)
    assert repr(bad) in str(info.value)
    assert "invalid literal" not in str(info.value)


@pytest.mark.parametrize("bad", ["1 00/1m", "1 0 / 1m", "100/1 m", "100/1h 30m", "100/ 1 m"])
def test_a_rate_refuses_spaces_inside_its_count_or_duration(bad):
    """Spaces were taken out of the whole rate before it was read: ``"1 00/1m"`` was 100
    a minute. Inside ``COUNT`` or ``DURATION`` they are refused now (a duration takes
    none anywhere), naming the rate; around the ``/`` and the whole they are kept."""
    from garrison._duration import parse_rate

    with pytest.raises(ValueError) as info:
        parse_rate(bad)
    assert repr(bad) in str(info.value)
    assert parse_rate("10 / 60s") == parse_rate(" 10 / 1m ") == parse_rate("10/ 1m") \
        == (10, 60.0)


@pytest.mark.parametrize("bare", ["0", "5", "1.5"])
def test_a_duration_string_without_a_unit_is_refused_saying_so(bare):
    """One grammar: a number is seconds; a string always carries its unit (so "0" is
    not 0 s but a mistake, and the error says which string would do)."""
    with pytest.raises(ValueError, match=f"needs a unit, e.g. '{bare}s'"):
        parse_duration(bare, what="sleep duration")


@pytest.mark.parametrize("negative", ["-5s", "-1h30m", "-1", " -250ms"])
def test_a_negative_duration_string_is_refused_saying_it_is_negative(negative):
    """``-5s`` got the generic "expected seconds or a string like '250ms', ..." where
    ``-5`` says what is wrong: a duration cannot be negative."""
    with pytest.raises(ValueError) as info:
        parse_duration(negative, what="timeout")
    assert str(info.value) == (f"invalid timeout {negative!r}: a duration cannot be "
                               "negative"), info.value


def test_not_in_process_is_one_clear_line():
    with pytest.raises(garrison.NotInProcess, match="inside a garrison process"):
        garrison.process.pid()
    with pytest.raises(garrison.NotInProcess):
        garrison.process.inbox()


async def test_a_reply_outside_any_process_names_msg_reply():
    """``msg.reply`` looks its runtime up on the hot path's way; outside a process it
    still says which call needs one."""
    msg = garrison.Message("q", 1, garrison.Pid("processes", "a"), "m-1", "7")
    with pytest.raises(garrison.NotInProcess, match=r"msg\.reply\(\) must run inside"):
        await msg.reply(2)
