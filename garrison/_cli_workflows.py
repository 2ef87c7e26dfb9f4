"""``garrison workflows --store DB ...``: inspect and drive a workflow store.

``DB`` is a SQLite file or a ``postgresql://`` URL. Works whether or not a node runs
on the store: the store is opened without its lock, reads see committed state, and
writes (signal, resolve, reject, cancel, start, terminate, retry) commit at once; a
running node picks them up immediately, a stopped one on its next start. ``replay``
and ``export`` open the store read-only: its file is never changed (they may run on a
copy of a production store).

Exit codes: 0 done; 1 the workflow or promise is not there, or refuses the
request (finished, already resolved), or one of several workflows retry, cancel or
terminate acts on could not be acted on (each is said on its line), or a selection
was given without ``--yes``, or a replayed workflow differs from its journal (for
``replay`` only that: its unknown ``--id`` is 2); 2 bad arguments or a store that
cannot be used (missing, damaged, not a garrison store, newer schema,
refused by the system), always as one line on stderr;
141 (128 + SIGPIPE) when the reader of stdout went away (``... | head``), quietly,
as other Unix tools do.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import itertools
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import _store_tools as tools
from ._cli_options import (
    COLUMN_WIDTH,
    CommandGroup,
    cell,
    escaped,
    one_line,
    print_table_pages,
    run_with_store,
)
from ._cli_options import cut as _cut  # (``cut`` names a variable of its own here)
from ._errors import DedupKeyTaken, GarrisonError, NoSuchWorkflow
from ._store_tools import ToolError, json_arg, when
from ._targets import exit_is_import_error, is_script, script_spec
from .persistence import DamagedRecord, WorkflowStatus


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the ``workflows`` sub-command on the main parser."""
    group = CommandGroup(sub, "workflows", common, dest="wf_command",
                         help="inspect and drive a workflow store",
                         description="Inspect and drive a workflow store, with or without a "
                                     "node running on it. Every option is accepted before or "
                                     "after the command.")
    verb = group.verb
    ls = verb("list", help="list workflows (--json: one JSON array of full workflow records)")
    ls.add_argument("--status", action="append", default=[],
                    help="only these statuses (repeat or comma-separate)")
    ls.add_argument("--search", action="append", default=[], metavar="KEY=VALUE",
                    help="filter on search attributes (VALUE is JSON or a plain string; "
                         "repeat: every one must match)")
    ls.add_argument("--wide", action="store_true",
                    help="show names and search attributes whole (the table cuts them "
                         "at 40 characters)")
    ls.add_argument("--id", dest="id_prefix", action="append", default=[],
                    metavar="PREFIX", help="only workflows whose id starts with PREFIX")
    ls.add_argument("--parent", metavar="PID", type=_parent_pid,
                    help="only the children of the workflow whose pid is PID "
                         "(host/id, as show names it: workflows/order-17)")
    ls.add_argument("--order", choices=("oldest", "newest"), default="oldest",
                    help="by start time: oldest first (the default) or newest first")
    ls.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                    help="at most N workflows (the first N in --order)")

    for name, helptext in (("show", "one workflow in detail"),
                           ("history", "its journal, one record per line")):
        p = verb(name, help=helptext)
        p.add_argument("id")
        if name == "history":
            p.add_argument("--wide", action="store_true",
                           help="show each name and outcome whole (the table cuts them "
                                "at 60 characters)")

    sig = verb("signal", help="send a message to a workflow's durable inbox")
    sig.add_argument("id")
    sig.add_argument("topic")
    sig.add_argument("payload", nargs="?", default="null",
                     help="JSON (default null; -: read it from standard input)")

    res = verb("resolve", help="resolve a durable promise")
    res.add_argument("id")
    res.add_argument("promise")
    res.add_argument("value", nargs="?", default="null",
                     help="JSON (default null; -: read it from standard input)")

    rej = verb("reject", help="reject a durable promise")
    rej.add_argument("id")
    rej.add_argument("promise")
    rej.add_argument("message")

    can = verb("cancel", help="ask a workflow to cancel (or several: IDs, or a selection)")
    _add_selection(can, "cancel")

    st = verb(
        "start", help="start a workflow (the node holding the store runs it at once, "
                      "else the next node that opens the store)")
    st.add_argument("target", help="the workflow function, module:function (importable "
                                   "from the current directory), or a workflow.py entry "
                                   "id of the config given with --config")
    st.add_argument("args", nargs="?", default="[]",
                    help="its arguments, a JSON array (default []; -: read it from "
                         "standard input)")
    st.add_argument("--id", help="the workflow id (default: a fresh one); an id that "
                                 "exists is left as it is")
    st.add_argument("--priority", type=_priority, default=0, metavar="N",
                    help="its place in its host's queue: higher first (default 0; a whole "
                         "number from -2**63 to 2**63 - 1)")
    st.add_argument("--dedup", metavar="KEY",
                    help="a dedup key: while a workflow started with it is unfinished, "
                         "nothing is started (that workflow is named)")

    term = verb(
        "terminate", help="end a workflow at once as failed (Terminated), without its "
                          "cancellation handlers (or several: IDs, or a selection)")
    _add_selection(term, "terminate")
    term.add_argument("--reason", default="terminated by garrison workflows terminate",
                      help="the message of its Terminated error (not empty or blank)")

    ret = verb(
        "retry", help="resume a failed or blocked workflow by replay from its journal (or "
                      "several: IDs, or a selection)")
    _add_selection(ret, "retry")

    pr = verb(
        "prune", help="delete the ended workflows (completed, failed, cancelled) that "
                      "ended longer ago than --older-than, with every row they own")
    pr.add_argument("--older-than", required=True, type=_older_than, metavar="DURATION",
                    help="how long ago they ended, at least (30d, 12h, 90m)")
    pr.add_argument("--status", action="append", default=[],
                    help="only these ended statuses (repeat or comma-separate; default: "
                         "completed, failed, cancelled)")
    pr.add_argument("--host", metavar="NAME",
                    help="only the workflows of this workflow host (default: every one "
                         "of the store)")
    pr.add_argument("--dry-run", action="store_true",
                    help="count the workflows it would delete; delete nothing")

    rp = verb(
        "replay", help="replay workflows' journals against the code installed now, with "
                       "no effects; exit 1 if any differs")
    rp.add_argument("--id", action="append", default=[], dest="ids", metavar="ID",
                    help="only these workflows (repeat)")
    rp.add_argument("--status", action="append", default=[],
                    help="only these statuses (repeat or comma-separate; default: every "
                         "unfinished workflow)")
    rp.add_argument("--all", action="store_true", help="every workflow, finished ones too")
    rp.add_argument("--migrate", action="store_true",
                    help="first migrate a store of an older garrison to this one's schema "
                         "(as a node would, running nothing): on a copy, as the older "
                         "garrison cannot open it after that")
    rp.add_argument("--module", action="append", default=[], metavar="PATH",
                    help="where the workflow code is: a folder to import from, or a module "
                         "(dotted name or file.py) to import first (repeat; the current "
                         "directory is always importable)")

    exp = verb("export", help="print a workflow's history (row and journal) as "
                                         "JSON, for garrison.testing.replay")
    exp.add_argument("id")
    group.parser.set_defaults(func=cmd_workflows)


_Fail = ToolError


def _positive_int(text: str) -> int:
    """``--limit``'s value: a whole number of at least 1, in ASCII digits (``int()``
    also takes Arabic-Indic digits and ' 3 ', as the console does not)."""
    value = int(text) if text.isascii() and text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _parent_pid(text: str) -> str:
    """``--parent``'s value: a pid's text, ``host/id`` (a workflow's id alone matched
    no row's parent: it listed no workflows, as if it had no children)."""
    if "/" not in text:
        raise argparse.ArgumentTypeError(
            f"expected a pid (host/id, as show names it), got {text!r}: a workflow's id; "
            f"its pid is 'workflows/{text}' on the default host")
    return text


def _older_than(text: str) -> float:
    """``--older-than``'s value: a duration longer than 0 (``30d``)."""
    from ._duration import parse_retention

    try:
        return parse_retention(text, what="duration", command_line=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _priority(text: str) -> int:
    """``--priority``'s value: a whole number in ASCII digits, with its sign (its range is
    ``start_workflow``'s, checked with the start)."""
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number (higher first), got "
                                         f"{text!r}")
    return int(text)


def cmd_workflows(args: argparse.Namespace) -> int:
    """Run one ``garrison workflows`` command; returns the exit status (see the module)."""
    return run_with_store("workflows", args, lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    create = None
    if args.wf_command == "start":  # (checked before a store is made for it)
        args.start = _start_checks(args)
        create = _created
    if args.wf_command in ACTS_ON:  # (its arguments checked before the store is opened)
        _selection_checks(args)
    store = tools.open_store(args.store, readonly=args.wf_command in _READ_ONLY,
                             migrate=getattr(args, "migrate", False), create=create,
                             reads=args.wf_command in _READS)
    try:
        _COMMANDS[args.wf_command](store, args)
    except Exception as exc:
        failed = _failed(store, args, exc)
        if failed is None:
            raise
        raise failed from None
    finally:
        store.close()


def _failed(store: Any, args: argparse.Namespace, exc: Exception) -> ToolError | None:
    """The command's error for ``exc``, which ended it: what it says of the store (named
    as ``shown``), or ``None`` to raise ``exc`` as it is. The one wording of such an
    error, for the command's stderr and for a ``--json`` summary's ``error``."""
    from .persistence._file import store_error

    shown = store.path or args.store  # (a postgresql:// URL without its password)
    if isinstance(exc, NoSuchWorkflow):  # removed between our read and our write
        return _Fail(f"{exc} ({shown})")
    if isinstance(exc, GarrisonError):
        return _Fail(str(exc), 2)
    if isinstance(exc, sqlite3.Error):  # a damaged page met by a read or a write
        return _Fail(str(store_error(args.store, args.store, exc, 5.0)), 2)
    if isinstance(exc, json.JSONDecodeError):  # a row whose JSON is no JSON (DamagedRecord)
        said = exc if isinstance(exc, DamagedRecord) else f"a row holds no JSON ({exc})"
        return _Fail(f"store {shown!r} {_is_damaged(exc)}: {said}", 2)
    if isinstance(exc, BrokenPipeError):
        return None
    if isinstance(exc, OSError):
        return _Fail(f"store {shown!r}: {exc.strerror or exc}", 2)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):  # PostgreSQL refused
        return _Fail(f"store {store.path!r}: {str(exc).strip()}", 2)
    return None


# ------------------------------------------------------------------ reads
def _list(store: Any, args: argparse.Namespace) -> None:
    statuses = _statuses(args.status)
    search = tools.search_filters(args.search)
    damaged: list[DamagedRecord] = []
    if len(args.id_prefix) > 1:  # (not the last one silently: replay's --id repeats)
        raise _Fail(f"--id takes one id prefix, given more than once "
                    f"({', '.join(map(repr, args.id_prefix))})", 2)
    prefix = args.id_prefix[0] if args.id_prefix else None
    select = {"newest_first": args.order == "newest", "id_prefix": prefix or None,
              "parent": args.parent or None}
    # read and printed a page at a time: a store of 300,000 workflows printed its first
    # line after 14 s, holding every record (480 MB)
    pages = iter(()) if search is None else store.pages_past_damage(
        statuses or None, search or None, damaged, args.limit, **select)
    first = next(pages, None)
    if args.json:
        print("[", end="")
        sep = ""
        for page in itertools.chain((first,) if first else (), pages):
            for r in page:
                print(sep + tools.standard_json(_record(r), default=str), end="")
                sep = ", "
        print("]")
    elif not first:
        print("no workflows")
    else:
        # (an id is whole, what show and retry take, its column padded to at most 40;
        # the other values are cut there: --wide, --json whole)
        width = None if args.wide else COLUMN_WIDTH
        table = ([(r.workflow_id, r.name, str(r.status), _when(r.updated),
                   _short(r.search, width)) for r in page]
                 for page in itertools.chain((first,), pages))
        # (a status column as wide as the longest status: ended ones often come later)
        print_table_pages(("ID", "NAME", "STATUS", "UPDATED", "SEARCH"), table, width, width,
                          least=(0, 0, max(len(s.value) for s in WorkflowStatus)))
    if damaged:
        sys.stdout.flush()
        cut = None if damaged[-1].id_is_text else damaged[-1].workflow_id
        raise _Fail(f"store {store.path or args.store!r} {_is_damaged(damaged[0])}: "
                    f"{_damaged(damaged)}" + ("; the other workflows are listed" if cut is None else
                       f"; the workflows before {cut!r} in this order are listed, not those "
                       "after it (a read cannot page past an id that is not UTF-8 text)"), 2)


def _is_damaged(exc: Exception) -> str:
    """What the store is, where a read met ``exc`` (a ``DamagedRecord``): damaged, or
    holding a whole number too long for this Python (nothing damaged: it says how to
    read it)."""
    if isinstance(exc, DamagedRecord) and exc.too_long:
        return "cannot be read by this Python"
    return "is damaged"


def _damaged(damaged: list[DamagedRecord]) -> str:
    """The damaged rows a read stepped over: the first one's error, and the ids of the
    next five."""
    if len(damaged) == 1:
        return str(damaged[0])
    return (f"{damaged[0]} (and {len(damaged) - 1} other workflow(s): "
            f"{', '.join(repr(d.workflow_id) for d in damaged[1:6])}"
            f"{', ...' if len(damaged) > 6 else ''})")


def _statuses(given: list[str]) -> list[str]:
    """The ``--status`` values (repeated or comma-separated), each a workflow status
    (an empty one is refused: it selected the default, silently)."""
    known = [s.value for s in WorkflowStatus]
    statuses = [s.strip() for arg in given for s in arg.split(",")]
    for status in statuses:
        if status not in known:
            raise _Fail(f"--status {status!r} is not a workflow status: expected one of "
                        f"{', '.join(known)}", 2)
    return list(dict.fromkeys(statuses))


#: the keys of ``show`` whose value is the row's own text (its id, times, pids), shown as
#: it is; every other is the workflow's data (input, result, state, ...), as JSON
_ROW_TEXT = frozenset({"workflow_id", "name", "status", "created", "updated", "parent",
                       "run_id", "host", "node"})


def _readable_json(value: Any) -> str:
    """``value``'s JSON for a person: its letters as they are (``"Zoë"``, not
    ``"Zo\\u00eb"``), and each character that is not printable (a control character,
    a C1 one such as a terminal's CSI, a bidi override, a lone surrogate) as its JSON
    escape, so that the line is still the value's JSON and acts on nothing."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if text.isprintable() else _BEYOND_ASCII.sub(_json_escape, text)


def _json_escape(found: re.Match[str]) -> str:
    """A character as it is if printable, else as JSON escapes it (beyond the BMP: as
    its surrogate pair)."""
    char = found.group()
    if char.isprintable():
        return char
    point = ord(char)
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    point -= 0x10000
    return f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}"


#: the characters JSON leaves as they are that may not be printable (those below the
#: space it escapes itself)
_BEYOND_ASCII = re.compile("[^\x20-\x7e]")


#: the most of one value ``show`` prints (a screen's worth; ``--json``: whole)
SHOW_WIDTH = 4000


def _show(store: Any, args: argparse.Namespace) -> None:
    detail = tools.detail(store, tools.get(store, args.id))
    if args.json:
        _print_json(detail)
        return
    children, total = detail.pop("children"), detail.pop("children_total")
    queue = detail.pop("queue")
    width = max(len(k) for k in detail)
    for key, value in detail.items():
        # (the row's own text as a table's cell; the workflow's data, a string result
        # too, as its JSON: "null" is no None, and an escape it holds is not acted on)
        text = cell(value) if key in _ROW_TEXT and isinstance(value, str) \
            else _readable_json(value)
        if len(text) > SHOW_WIDTH and key != "workflow_id":  # (an id is never cut)
            text = (f"{text[:SHOW_WIDTH - 1]}… ({len(text) - SHOW_WIDTH + 1:,} more "
                    "characters: --json shows them)")
        print(f"{key.ljust(width)}  {text}")
    if queue is not None:  # (pending: why it waits, and where)
        print(f"{'queue'.ljust(width)}  {queue['reason']}")
    # the children last, one a line (id and status), the first CHILDREN_SHOWN of them
    if total > len(children):
        pid = f"{detail['host'] or 'workflows'}/{detail['workflow_id']}"
        said = (f"{len(children):,} of {total:,} shown (garrison workflows list --parent "
                f"{pid} lists them all)")
    else:
        said = f"{total:,}" if total else "none"
    print(f"{'children'.ljust(width)}  {said}")
    if children:  # (an id as the row's is shown: an older store's may hold an escape)
        ids = [cell(c["workflow_id"]) for c in children]
        id_width = min(max(len(i) for i in ids), COLUMN_WIDTH)
        for shown, c in zip(ids, children, strict=True):
            print(f"  {shown.ljust(id_width)}  {c['status']}")


def _history(store: Any, args: argparse.Namespace) -> None:
    # The journal is read a page at a time, twice (never held whole: its outcomes may
    # be hundreds of megabytes): first for the columns' widths, and so that a damaged
    # record is named before anything is printed, then to print each record as it is
    # read. What is printed is what one read of it all printed.
    rec = tools.get(store, args.id)
    wid = rec.workflow_id
    width = None if args.wide else 60
    widths = [0] * 5
    for rows in _history_rows(store, rec, width, outcomes=False):
        for row in rows:
            for i, c in enumerate(row[:5]):
                c = cell(c) if i == 0 else _cut(cell(c), width)
                widths[i] = max(widths[i], len(c))
    if args.json:
        out = sys.stdout
        out.write("[")
        first = True
        for page in tools.journal_pages(store, wid):
            for r, _ in page:
                out.write(("" if first else ", ") + tools.standard_json(
                    {"seq": r.seq, "time": _when(r.time), "kind": r.kind, "name": r.name,
                     "outcome": r.outcome, "attempts": r.attempts}, default=str))
                first = False
        out.write("]\n")
        _one_run(store, rec.workflow_id, (rec.run_id or "", rec.attempt),
                 "while its history was read: the history printed may mix two runs; "
                 "read it again")
        return
    if not any(widths):  # (the first pass read no record)
        status = WorkflowStatus(rec.status)
        print(f"workflow {rec.workflow_id!r} has no journal records: it ended ({status}) "
              "without recording a step" if status.finished
              else f"workflow {rec.workflow_id!r} has no journal records yet")
        return
    print_table_pages(("SEQ", "TIME", "KIND", "NAME", "ATTEMPTS", "OUTCOME"),
                      _history_rows(store, rec, width), width, least=widths)
    _one_run(store, rec.workflow_id, (rec.run_id or "", rec.attempt),
             "while its history was read: the history printed may mix two runs; read it "
             "again")


def _one_run(store: Any, wid: str, run: tuple[str, int], said: str) -> None:
    """Exit 1 (what was printed flushed first) if workflow ``wid``, of ``run`` (its run
    id and attempt) as read before its journal's pages, was deleted or began another
    run since (a continue-as-new or a retry began its journal again: the pages printed
    may be of two runs); ``said`` ends the error."""
    now = store.get_workflow(wid)
    if now is not None and (now.run_id or "", now.attempt) == run:
        return
    sys.stdout.flush()
    raise _Fail(f"workflow {wid!r} "
                + ("was deleted" if now is None else "began another run (a "
                   "continue-as-new or a retry)") + f" {said}", 1)


def _history_rows(store: Any, rec: Any, width: int | None, *, outcomes: bool = True
                  ) -> Iterator[list[tuple[str, ...]]]:
    """``history``'s table a page of the journal at a time, a row with a note where
    sequence numbers have no record; ``outcomes`` false: the OUTCOME of each record
    left empty (the first pass, which only measures the other columns)."""
    expected = 1  # seq 0 is the state a continue-as-new run starts with
    finished = WorkflowStatus(rec.status).finished
    for page in tools.journal_pages(store, rec.workflow_id):
        table: list[tuple[str, ...]] = []
        for r, _ in page:
            if r.seq > expected:
                # A seq is taken where an operation starts, and recorded when it
                # finishes; see "Command line" in the README.
                gap = str(expected) if r.seq == expected + 1 else f"{expected}-{r.seq - 1}"
                table.append((gap, "", "-", "", "",
                              FINISHED_GAP_NOTE if finished else GAP_NOTE))
            table.append((str(r.seq), _when(r.time), r.kind, r.name or "",
                          str(r.attempts or ""),
                          _outcome_text(r.kind, r.outcome, width) if outcomes else ""))
            expected = r.seq + 1
        yield table


def _outcome_text(kind: str, outcome: Any, width: int | None = 60) -> str:
    """A journal record's outcome in ``history``'s table: the times the journal stores
    as unix seconds (a sleep's or timer's deadline, a ``workflow.now()``) as the times
    they are, the rest as JSON cut at ``width`` characters (``None``, ``--wide``: whole;
    ``--json``: every outcome as stored)."""
    if kind == "now":
        return _time_text(outcome) or _short(outcome, width)
    if kind in ("sleep", "timer") and isinstance(outcome, dict) and len(outcome) == 1:
        at = _time_text(outcome.get("deadline"))
        if at:
            return f"deadline {at}"
    return _short(outcome, width)


def _time_text(seconds: Any) -> str:
    """Unix seconds as :func:`when` shows a time; ``""`` for anything else."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    try:
        return _when(datetime.datetime.fromtimestamp(seconds, datetime.UTC))
    except (OverflowError, OSError, ValueError):  # (no time a clock shows)
        return ""


#: the OUTCOME shown for sequence numbers without a journal record
GAP_NOTE = "(no record: still running, or it raised before it was recorded)"
#: the same, of a workflow that has ended: nothing of it runs any more
FINISHED_GAP_NOTE = ("(no record: never finished (lost a first(), or not awaited), or it "
                     "raised before it was recorded)")


# ------------------------------------------------------------------ writes
def _json_given(text: str, what: str, example: str | None = None) -> Any:
    """The JSON argument ``text`` parsed (``json_arg``), or, for ``-``, the JSON read
    from standard input: a command line takes no argument over 128 KiB."""
    if text != "-":
        return json_arg(text, what) if example is None else json_arg(text, what, example)
    stdin = sys.stdin
    if stdin is None:  # (closed: ``<&-``, or a service manager's)
        raise _Fail(f"the {what} is to be read from standard input (-), which is closed", 2)
    if stdin.isatty():  # (``-`` taken for "none" would wait here, saying nothing)
        print(f"garrison workflows: reading the {what} (JSON) from standard input, "
              "a terminal: end it with Ctrl-D", file=sys.stderr, flush=True)
    try:
        text = stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Fail(f"the {what} read from standard input is not UTF-8 text: {exc}", 2
                    ) from None
    except OSError as exc:
        raise _Fail(f"the {what} cannot be read from standard input: "
                    f"{exc.strerror or exc}", 2) from None
    what = f"{what} (read from standard input)"
    return json_arg(text, what) if example is None else json_arg(text, what, example)


def _signal(store: Any, args: argparse.Namespace) -> None:
    payload = _json_given(args.payload, "payload")
    msg_id = tools.signal(store, args.id, args.topic, payload)
    _done(args, {"workflow_id": args.id, "signal": args.topic, "message_id": msg_id},
          f"signal {args.topic!r} queued for {args.id!r} (message {msg_id})")


def _resolve(store: Any, args: argparse.Namespace) -> None:
    value = _json_given(args.value, "value")
    tools.resolve(store, args.id, args.promise, value)
    _done(args, {"workflow_id": args.id, "promise": args.promise, "resolved": value},
          f"promise {args.promise!r} of {args.id!r} resolved",
          tools.undeclared_promise(store, args.id, args.promise))


def _reject(store: Any, args: argparse.Namespace) -> None:
    tools.reject(store, args.id, args.promise, args.message)
    _done(args, {"workflow_id": args.id, "promise": args.promise,
                 "rejected": args.message},
          f"promise {args.promise!r} of {args.id!r} rejected",
          tools.undeclared_promise(store, args.id, args.promise))


def _cancel(store: Any, args: argparse.Namespace) -> None:
    # the workflows this command cancelled or asked to cancel: beside a node, it cancels
    # their unfinished children with them, maybe before a later batch reads one (which
    # its own cancel refuses then: it is cancelled)
    ours: set[str] = set()

    def batch(store: Any, args: argparse.Namespace, ids: list[str],
              selected: dict[str, int] | None, results: _Results) -> list[_Outcome]:
        made = tools.cancel_each(store, ids)
        ours.update(wid for wid, outcome in zip(ids, made, strict=True)
                    if not isinstance(outcome, Exception))
        outcomes: list[_Outcome] = []
        for wid, outcome in zip(ids, made, strict=True):  # (in order: a grandchild too)
            if isinstance(outcome, ToolError):
                outcomes.append(_cancelled_with_ours(store, wid, ours, outcome))
            else:
                outcomes.append(outcome if isinstance(outcome, Exception)
                                else _cancelled(wid, outcome))
        return outcomes

    _act(store, args, _cancel_one, batch)


def _cancelled_with_ours(store: Any, wid: str, ours: set[str],
                         refused: ToolError) -> _Outcome:
    """What a bulk ``cancel`` says of workflow ``wid``, which its cancel ``refused``:
    cancelled, if it ended cancelled with a parent in ``ours`` (those this command
    cancelled or asked to: it joins them); else ``refused``."""
    try:
        rec = store.get_workflow(wid)
    except Exception as exc:  # (its line: a damaged row, or the store's error once the
        return exc  # batch's others are said)
    if rec is None or str(rec.status) != "cancelled" or rec.parent is None \
            or rec.parent.id not in ours:
        return refused
    ours.add(wid)
    return ({"workflow_id": wid, "cancel_requested": True, "cancelled": True},
            f"cancelled {wid!r} (with its parent {rec.parent.id!r})")


def _cancel_one(store: Any, args: argparse.Namespace, wid: str) -> tuple[dict[str, Any], str]:
    return _cancelled(wid, tools.cancel(store, wid))


def _cancelled(wid: str, ended: bool) -> tuple[dict[str, Any], str]:
    """What ``cancel`` says of workflow ``wid``: ``ended`` in the store, or asked."""
    return ({"workflow_id": wid, "cancel_requested": True, "cancelled": ended},
            f"cancelled {wid!r} (it was pending, never run)" if ended else
            f"cancel requested for {wid!r}")


def _created(path: str) -> None:
    print(f"garrison workflows: created the store {path!r}, which no node had opened "
          "yet; a node opening it runs the workflow", file=sys.stderr)


def _start_checks(args: argparse.Namespace) -> tuple[str, str, Any]:
    """``start``'s arguments, target and config checked: ``(workflow id, name, the
    transaction that creates the workflow)``."""
    # (the example a workflow's arguments need: an array, not any JSON value)
    values = _json_given(args.args, "arguments", "'[\"order-17\", 3]'")
    if args.args == "-":  # (read once: the start compares them again, as given)
        args.args = json.dumps(values)
    if not isinstance(values, list):
        # (one argument given bare, the common slip: say how to pass it)
        one = json.dumps([values], ensure_ascii=False)
        raise _Fail(f"the arguments must be a JSON array (e.g. '[\"order-17\", 3]'), got "
                    f"{args.args!r}: for that one argument, give '{one}'", 2)
    make_importable([])
    config = None
    if args.config is not None:
        from .config._loader import load_for_tool

        try:
            config = load_for_tool(args.config)
        except GarrisonError as exc:
            raise _Fail(str(exc), 2) from None
    return tools.start_transaction(args.target, values, args.id, config,
                                   priority=args.priority, dedup=args.dedup)


def _start(store: Any, args: argparse.Namespace) -> None:
    wid, name, tx = args.start
    try:
        created = bool(store.write(tx)[0])
    except DedupKeyTaken as taken:  # (as start_workflow: the holder's, nothing started)
        holder = store.get_workflow(taken.workflow_id)
        what = "" if holder is None else f" ({holder.name}, {holder.status})"
        _done(args, {"workflow_id": taken.workflow_id, "created": False,
                     "name": None if holder is None else holder.name, "dedup": taken.dedup},
              f"workflow {taken.workflow_id!r} holds the dedup key {taken.dedup!r}{what}: "
              "nothing started")
        return
    if created:
        _done(args, {"workflow_id": wid, "created": True, "name": name},
              f"workflow {wid!r} started ({name})")
        return
    # (what runs under that id: a start of another function is easily missed)
    there = store.get_workflow(wid)
    what = "" if there is None else f" ({there.name}, {there.status})"
    other = "" if there is None or there.name == name else f", not {name}"
    if there is not None and not other:  # (the same function with other arguments)
        given = json_arg(args.args, "arguments", "'[\"order-17\", 3]'")
        # (one that continued as new holds what its last run carried on with: a CONTINUED
        # record at seq 0, read only when the arguments differ)
        if there.input != given and 0 not in store.journal_sizes(wid):
            other = (f", started with other arguments ({json.dumps(there.input)[:200]}, "
                     f"not {json.dumps(given)[:200]})")
    _done(args, {"workflow_id": wid, "created": False,
                 "name": None if there is None else there.name},
          f"workflow {wid!r} exists already{what}{other}: left as it is")


def _terminate(store: Any, args: argparse.Namespace) -> None:
    from .hosts.workflow import parent_terminated

    # several: each asked first, as one is, then their ends awaited together (one after
    # another, each node's answer waited for in turn, took minutes for thousands)
    asked: list[tools.TerminateAsked] = []
    # the errors of the descendants of those this command ended or asked to end: a
    # terminate ends them with it (here with no node; beside one, the node, maybe
    # before a later batch reads them), and reaching one found it ended as asked
    # (refused by itself: it is failed)
    ends: set[str] = set()

    def ended_with_ours(store: Any, args: argparse.Namespace, wid: str, results: _Results,
                        refused: ToolError) -> None:
        """Say ``wid`` as terminated if a terminate of this command ended it with an
        ancestor (the node's, beside one, or ours); else raise ``refused``."""
        rec = store.get_workflow(wid)
        if rec is None or rec.error is None or rec.error.type != "Terminated" \
                or rec.error.message not in ends:
            raise refused
        ends.add(parent_terminated(wid).message)
        results.ok(wid, *_terminated(store, args, wid, True))

    def ask(store: Any, args: argparse.Namespace, wid: str, results: _Results) -> None:
        try:
            request = tools.ask_terminate(store, wid, args.reason)
        except ToolError as exc:
            ended_with_ours(store, args, wid, results, exc)
            return
        ends.add(parent_terminated(wid).message)
        if request is None:
            results.ok(wid, *_terminated(store, args, wid, True))
        else:
            asked.append(request)

    def batch(store: Any, args: argparse.Namespace, ids: list[str],
              selected: dict[str, int] | None, results: _Results) -> list[_Outcome]:
        made = tools.ask_terminate_each(store, ids, args.reason)
        # (those it ended or asked first: a descendant of one ended with it, in this
        # batch, is refused alone as ended, which it was as asked)
        ends.update(parent_terminated(wid).message
                    for wid, answer in zip(ids, made, strict=True)
                    if answer is True or isinstance(answer, tools.TerminateAsked))
        unsaid: Exception | None = None  # (the store's error: raised once all are said)
        for wid, answer in zip(ids, made, strict=True):  # (each said here, in order)
            try:
                with results.of(wid):
                    if answer is None:  # not written: asked alone
                        ask(store, args, wid, results)
                    elif answer is True:  # ended in the store
                        results.ok(wid, *_terminated(store, args, wid, True))
                    elif isinstance(answer, tools.TerminateAsked):
                        asked.append(answer)  # (said once the node has ended it: settle)
                    elif isinstance(answer, ToolError):  # (ended with a parent of
                        ended_with_ours(store, args, wid, results, answer)  # ours, maybe)
                    elif isinstance(answer, Exception):
                        raise answer
            except Exception as exc:
                unsaid = unsaid or exc
        if unsaid is not None:
            raise unsaid
        return [None] * len(ids)

    def settle(store: Any, args: argparse.Namespace, results: _Results) -> None:
        _await_terminates(store, args, results, asked)

    _act(store, args, _terminate_one, batch, settle)


def _terminate_one(store: Any, args: argparse.Namespace,
                   wid: str) -> tuple[dict[str, Any], str]:
    return _terminated(store, args, wid, tools.terminate(store, wid, args.reason,
                                                         wait=TERMINATE_WAIT))


#: how long ``terminate`` waits to see the node holding the store end a workflow (of
#: several: for the node to end one more of them)
TERMINATE_WAIT = 5.0


def _await_terminates(store: Any, args: argparse.Namespace, results: _Results,
                      asked: list[tools.TerminateAsked]) -> None:
    """The terminates of several workflows a node was asked for, each answered once
    the node has ended it; while the node ends none of those left for
    :data:`TERMINATE_WAIT` seconds, those left get the last look of one that the node
    does not end in time (ended here if the node has gone)."""
    waiting, progress = asked, time.monotonic()
    while waiting:
        left = []
        for request in waiting:
            with results.of(request.workflow_id):
                ended = tools.terminate_ended(store, request)
                if ended is None:
                    left.append(request)
                else:
                    results.ok(request.workflow_id,
                               *_terminated(store, args, request.workflow_id, ended))
        if len(left) < len(waiting):
            progress = time.monotonic()
        waiting = left
        if waiting and time.monotonic() - progress >= TERMINATE_WAIT:
            break
        if waiting:
            time.sleep(0.01)
    for request in waiting:
        with results.of(request.workflow_id):
            ended = tools.terminate_unanswered(store, request)
            results.ok(request.workflow_id,
                       *_terminated(store, args, request.workflow_id, ended))


def _terminated(store: Any, args: argparse.Namespace, wid: str,
                ended: bool) -> tuple[dict[str, Any], str]:
    """What ``terminate`` says of workflow ``wid``: ``ended``, or only asked."""
    error = {"type": "Terminated", "message": args.reason}
    rec = store.get_workflow(wid) if ended else None
    if rec is not None and rec.error is not None and rec.error.type == "Terminated":
        # another terminate may have won the race: say what the workflow holds
        error["message"] = rec.error.message
    if ended:
        return ({"workflow_id": wid, "status": "failed", "error": error},
                f"workflow {wid!r} terminated (failed: Terminated: "
                f"{one_line(error['message'])})")  # (a reason's newline too: one line)
    return ({"workflow_id": wid, "status": "terminate requested", "error": error},
            f"workflow {wid!r}: terminate requested; the node holding the store has "
            "not ended it yet (it ends it before running anything more, unless it ends "
            "on its own first: see garrison workflows show)")


def _retry(store: Any, args: argparse.Namespace) -> None:
    _act(store, args, _retry_one, _retry_batch)


def _retry_batch(store: Any, args: argparse.Namespace, ids: list[str],
                 selected: dict[str, int] | None, results: _Results) -> list[_Outcome]:
    return [outcome if isinstance(outcome, Exception) else
            ({"workflow_id": wid, "status": "pending", "retry": outcome},
             f"workflow {wid!r} retried: {outcome}")
            for wid, outcome in zip(ids, tools.retry_each(store, ids, selected), strict=True)]


def _retry_one(store: Any, args: argparse.Namespace, wid: str) -> tuple[dict[str, Any], str]:
    note = tools.retry(store, wid)
    return ({"workflow_id": wid, "status": "pending", "retry": note},
            f"workflow {wid!r} retried: {note}")


# ------------------------------------------------------------------ several workflows
#: the statuses of the workflows each write of several can act on: what a selection
#: selects from (``--status`` naming another is refused)
ACTS_ON = {"retry": ("failed", "blocked"),
           "cancel": ("pending", "running", "sleeping", "waiting", "blocked"),
           "terminate": ("pending", "running", "sleeping", "waiting", "blocked")}
#: the ids a selection's preview names (``--dry-run``: every one)
PREVIEW_IDS = 10
#: a selection's options, as ``list`` names its filters
_SELECTORS = ("--status", "--search", "--prefix", "--parent")


def _add_selection(parser: argparse.ArgumentParser, command: str) -> None:
    """``command``'s workflows: one ID (as ever), several, or a selection by ``list``'s
    filters, which acts only with ``--yes``."""
    acts_on = " or ".join(ACTS_ON[command])
    parser.add_argument("id", nargs="*", metavar="ID",
                        help="the workflow (several: each in turn, as for one; none: give "
                             "a selection instead)")
    parser.add_argument("--status", action="append", default=[],
                        help=f"select the workflows in these statuses (repeat or "
                             f"comma-separate; each {acts_on}; default: all of these)")
    parser.add_argument("--search", action="append", default=[], metavar="KEY=VALUE",
                        help="select by search attributes, as list --search (repeat: "
                             "every one must match)")
    parser.add_argument("--prefix", metavar="PREFIX",
                        help="select the workflows whose id starts with PREFIX, as list "
                             "--id PREFIX")
    parser.add_argument("--parent", metavar="PID", type=_parent_pid,
                        help="select the children of the workflow whose pid is PID, as "
                             "list --parent")
    parser.add_argument("--all", action="store_true",
                        help=f"select every workflow that is {acts_on}")
    parser.add_argument("--yes", action="store_true",
                        help=f"{command} what a selection selects (without it the "
                             "selection is shown, and nothing done)")
    parser.add_argument("--dry-run", action="store_true",
                        help="only list what the IDs or the selection name, doing nothing")


def _selected_by(args: argparse.Namespace) -> list[str]:
    """The selection options given (``--all`` last)."""
    given = [option for option in _SELECTORS
             if getattr(args, option.lstrip("-")) not in (None, [])]
    return given + (["--all"] if args.all else [])


def _selection_checks(args: argparse.Namespace) -> None:
    """The arguments of a write of several workflows, checked before the store is
    opened (exit 2): ids or a selection, not both and not neither; statuses this
    command can act on; ``--yes`` or ``--dry-run``, not both; a terminate's reason."""
    command = args.wf_command
    given = _selected_by(args)
    if args.id and given:
        raise _Fail(f"the IDs select the workflows themselves: they cannot be combined "
                    f"with {given[0]}", 2)
    if not args.id and not given:
        raise _Fail(f"{command} takes the id of a workflow (or several), or a selection: "
                    f"{', '.join(_SELECTORS)} or --all (as list's filters)", 2)
    if args.all and len(given) > 1:
        raise _Fail(f"--all selects every workflow {command} can act on: it cannot be "
                    f"combined with {given[0]}", 2)
    if args.prefix == "":  # (no filter at all: not what a prefix is given for)
        raise _Fail("--prefix '': an empty prefix selects every workflow: give --all for "
                    "that", 2)
    if args.yes and args.dry_run:
        raise _Fail("--dry-run does nothing and --yes acts: give one of them", 2)
    others = [s for s in _statuses(args.status) if s not in ACTS_ON[command]]
    if others:
        raise _Fail(f"{command} acts on workflows that are {', '.join(ACTS_ON[command])}: "
                    f"--status {', '.join(others)} selects none it can act on", 2)
    tools.search_filters(args.search)  # (refused here: exit 2, before the store is read)
    if command == "terminate":
        tools.check_reason(args.reason)


#: a write of one workflow: its answer, ``(JSON, line)``, as ``_done`` prints it
_One = Callable[[Any, argparse.Namespace, str], tuple[dict[str, Any], str]]
#: what a ``batch`` says of one workflow: its answer, ``(JSON, line)``, its error, or
#: ``None`` (said already, or left to ``settle``)
_Outcome = tuple[dict[str, Any], str] | Exception | None
#: the writes of several workflows committed together (given a selection's: the attempt
#: each was selected at), each one's :data:`_Outcome`
_Batch = Callable[[Any, argparse.Namespace, list[str], dict[str, int] | None, "_Results"],
                  list[_Outcome]]
#: how many workflows a ``batch`` of :func:`_act` writes in one commit (a commit each
#: was most of the time of a bulk retry on a server that syncs its commits; a batch holds
#: a SQLite store's write lock, which the node's own commits wait for, while it writes)
BATCH = 200


def _act(store: Any, args: argparse.Namespace, one: _One, batch: _Batch,
         settle: Callable[[Any, argparse.Namespace, _Results], None] | None = None) -> None:
    """``one`` of the workflow one id names, or ``batch`` of each the ids or the
    selection name. One id (and no ``--dry-run``) is as it ever was: its answer, or its
    error and exit status. Several, or a selection: each acted on as one would be,
    :data:`BATCH` of them at a time, committed together (``batch`` may leave a
    workflow's answer to ``settle``, called once after them all, or before a failure of
    the store ends the command: each written is said), each on its line (a
    failure too: the others go on), then how many were done; exit 1 when one could not
    be (2: its record is damaged). A selection acts only with ``--yes``: without it the
    workflows it selects are shown (``--dry-run``: all of them), exit 1."""
    command = args.wf_command
    if len(args.id) == 1 and not args.dry_run:
        _done(args, *one(store, args, args.id[0]))
        return
    statuses: list[str | None] | None = None
    selected: dict[str, int] | None = None  # (a selection's: the attempt each was at)
    # the selected rows that cannot be read: each named on its line, after the others
    damaged: list[DamagedRecord] = []
    if args.id:
        ids = list(dict.fromkeys(args.id))
    else:
        rows = _select(store, args, damaged)
        ids, statuses = [r.workflow_id for r in rows], [str(r.status) for r in rows]
        selected = {r.workflow_id: r.attempt for r in rows}
    if args.dry_run or not (args.yes or args.id):
        _preview(store, args, ids, statuses, damaged)
        return
    results = _Results(args, store.path or args.store)
    try:
        _in_batches(store, args, ids, batch, results, selected)
    except Exception as failure:
        if settle is not None:  # (those its batches wrote before: each said first)
            settle(store, args, results)
        if args.json:  # (what was done and what not, then the error as without --json)
            said = {a["workflow_id"] for a in results.answers}
            ids += [d.workflow_id for d in damaged]  # (not acted on either)
            _json_summary(command, ids, results, sum(a["ok"] for a in results.answers),
                          left=[wid for wid in ids if wid not in said],
                          error=str(_failed(store, args, failure) or failure))
        raise
    if settle is not None:
        settle(store, args, results)
    for exc in damaged:
        ids.append(exc.workflow_id)
        results.fail(exc.workflow_id,
                     f"store {results.shown!r} {_is_damaged(exc)}: {exc}", 2)
    done = len(ids) - len(results.failed)
    if args.json:
        _json_summary(command, ids, results, done)
    elif not ids:
        print(f"no workflows to {command}")
    else:
        print(f"{command}: {done:,} of {len(ids):,} workflow(s) done"
              + (f", {len(results.failed):,} not (see their lines)" if results.failed
                 else ""))
    if results.failed:
        sys.stdout.flush()
        names = ", ".join(repr(wid) for wid in list(results.failed)[:5])
        raise _Fail(f"{len(results.failed):,} of {len(ids):,} workflow(s) could not be "
                    f"{_PAST[command]}: {names}{', ...' if len(results.failed) > 5 else ''}",
                    max(results.failed.values()))


def _json_summary(command: str, ids: list[str], results: _Results, done: int, *,
                  left: list[str] | None = None, error: str | None = None) -> None:
    """A write of several workflows' ``--json`` summary: each of ``ids`` answered in
    ``results`` in their order, ``done`` of them; a store that failed partway adds
    those it did not act on (or whose write's outcome its failure left unknown),
    ``left``, and its ``error``."""
    order = {wid: n for n, wid in enumerate(ids)}
    summary: dict[str, Any] = {
        "command": command, "selected": len(ids), "done": done,
        "failed": len(results.failed),
        "workflows": sorted(results.answers, key=lambda a: order[a["workflow_id"]])}
    if left is not None:
        summary.update(left=left, error=error)
    _print_json(summary)


def _in_batches(store: Any, args: argparse.Namespace, ids: list[str], batch: _Batch,
                results: _Results, selected: dict[str, int] | None) -> None:
    """``batch`` of ``ids``, :data:`BATCH` at a time, each workflow's answer on its line.
    An error that is no refusal of its workflow (the store's) is raised once the
    batch's other workflows, which it wrote, have their lines."""
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        unsaid: Exception | None = None
        outcomes = batch(store, args, chunk, selected, results)
        for wid, outcome in zip(chunk, outcomes, strict=True):
            try:
                with results.of(wid):
                    if isinstance(outcome, Exception):
                        raise outcome
                    if outcome is not None:
                        results.ok(wid, *outcome)
            except Exception as exc:
                unsaid = unsaid or exc
        if unsaid is not None:
            raise unsaid


class _Results:
    """The answers of a write of several workflows: each printed on its line as it
    comes (``--json``: kept for one summary)."""

    def __init__(self, args: argparse.Namespace, shown: str) -> None:
        self.args, self.shown = args, shown
        self.answers: list[dict[str, Any]] = []
        #: the workflows that could not be acted on, with the exit status each gives
        self.failed: dict[str, int] = {}

    def ok(self, wid: str, data: dict[str, Any], text: str) -> None:
        self.answers.append({**data, "ok": True})
        if not self.args.json:
            print(escaped(text))

    def fail(self, wid: str, said: str, code: int) -> None:
        self.failed[wid] = code
        self.answers.append({"workflow_id": wid, "ok": False, "error": said})
        if not self.args.json:
            print(escaped(f"error: {said}"))

    @contextlib.contextmanager
    def of(self, wid: str) -> Iterator[None]:
        """A refusal of workflow ``wid`` inside is its failure (the others go on)."""
        try:
            yield
        except ToolError as exc:
            self.fail(wid, str(exc), exc.code)
        except NoSuchWorkflow as exc:  # removed between our read and our write
            self.fail(wid, f"{exc} ({self.shown})", 1)
        except DamagedRecord as exc:  # (its journal: the others are not)
            self.fail(wid, f"store {self.shown!r} {_is_damaged(exc)}: {exc}", 2)


#: what each write did, in the sentence of a failure
_PAST = {"retry": "retried", "cancel": "cancelled", "terminate": "terminated"}


def _select(store: Any, args: argparse.Namespace,
            damaged: list[DamagedRecord]) -> list[Any]:
    """The workflows the selection selects, oldest first, by ``list``'s filters: only
    in the statuses the command acts on. A selected row that cannot be read is stepped
    over, as ``list`` does, and added to ``damaged``."""
    statuses = _statuses(args.status) or list(ACTS_ON[args.wf_command])
    search = tools.search_filters(args.search)
    if search is None:  # (a key given twice with two values: none matches)
        return []
    return [rec for page in store.pages_past_damage(
                statuses, search or None, damaged, past_unreadable=True,
                parent=args.parent or None, id_prefix=args.prefix or None)
            for rec in page]


def _preview(store: Any, args: argparse.Namespace, ids: list[str],
             statuses: list[str | None] | None, damaged: list[DamagedRecord]) -> None:
    """What the ids or the selection name, nothing done: all of them with
    ``--dry-run``, else the first :data:`PREVIEW_IDS` and exit 1 saying to add
    ``--yes``. The selected rows that cannot be read (``damaged``) come last, each
    named with what is damaged; a dry run that met one ends naming it, exit 2."""
    command = args.wf_command
    if statuses is None:  # (the ids given: each as the store has it now)
        recs = [store.get_workflow(wid) for wid in ids]
        statuses = [None if rec is None else str(rec.status) for rec in recs]
    pairs = list(zip(ids, statuses, strict=True))
    unread = {exc.workflow_id: _damaged_column(exc) for exc in damaged}
    ids = ids + list(unread)
    if args.json:
        _print_json({"command": command, "selected": len(ids), "done": 0, "workflows": [
                         {"workflow_id": wid, "status": status} for wid, status in pairs
                     ] + [{"workflow_id": wid, "status": None, "damaged": said}
                          for wid, said in unread.items()]})
    elif not ids:
        print(f"no workflows to {command}")
    elif args.dry_run:
        width = min(max(len(wid) for wid in ids), COLUMN_WIDTH)
        for wid, status in pairs:
            print(f"{cell(wid.ljust(width))}  {status or 'not found'}")
        for wid, said in unread.items():
            print(f"{cell(wid.ljust(width))}  damaged: {escaped(said)}")
        print(f"{command} would act on {len(ids):,} workflow(s) (--dry-run: nothing done)")
    else:
        first = ", ".join(cell(wid) for wid in ids[:PREVIEW_IDS])
        more = len(ids) - PREVIEW_IDS
        print(f"{command} would act on {len(ids):,} workflow(s): {first}"
              + (f" and {more:,} more" if more > 0 else ""))
    if ids and not args.dry_run:
        sys.stdout.flush()
        raise _Fail(f"nothing done: add --yes to {command} these {len(ids):,} workflow(s), "
                    "or --dry-run to list them all")
    if damaged:  # (a dry run: its check of the selection says so)
        sys.stdout.flush()
        raise _Fail(f"store {store.path or args.store!r} {_is_damaged(damaged[0])}: "
                    f"{_damaged(damaged)}; "
                    f"the other workflows are listed, and {command} --yes acts on them", 2)


def _damaged_column(exc: DamagedRecord) -> str:
    """What a damaged row's error says after its workflow's name (``its input is not
    JSON (...)``)."""
    said = str(exc)
    head = f"workflow {exc.workflow_id!r}: "
    return said[len(head):] if said.startswith(head) else said


def _prune(store: Any, args: argparse.Namespace) -> None:
    from .hosts.workflow._retention import when_text

    given = [s.strip() for arg in args.status for s in arg.split(",")]
    for status in given:
        if status not in _PRUNABLE:
            known = [s.value for s in WorkflowStatus]
            why = ("an unfinished status" if status in known
                   else "not a workflow status")
            raise _Fail(f"--status {status!r} is {why}: prune deletes only ended workflows "
                        f"(--status {', '.join(_PRUNABLE)})", 2)
    statuses = list(dict.fromkeys(given)) or list(_PRUNABLE)
    count, before = tools.prune(store, args.older_than, statuses, host=args.host,
                                dry_run=args.dry_run)
    where = "" if args.host is None else f" of host {args.host!r}"
    # (a misspelt host prunes nothing, every time: a cron job would never tell)
    note = None if count or args.host is None or store.count_workflows(host=args.host) \
        else (f"no workflow of this store is of host {args.host!r}: --host takes a "
              "workflow.host entry's id (a workflow's pid up to its slash, as `garrison "
              "workflows show ID` prints it)")
    what = f"{count} ended workflow{'' if count == 1 else 's'} ({', '.join(statuses)})" \
           f"{where} that ended before {when_text(before)}"
    _done(args, {"pruned": 0 if args.dry_run else count,
                 "would_prune": count if args.dry_run else None, "statuses": statuses,
                 "host": args.host, "before": when_text(before)},
          f"would prune {what} (--dry-run: nothing deleted)" if args.dry_run
          else f"pruned {what}", note)


def _export(store: Any, args: argparse.Namespace) -> None:
    from .hosts.workflow import History

    if args.json:  # (standard JSON would turn a NaN into "NaN": not what the code saw)
        raise _Fail("export prints the history as JSON already, a NaN kept bare for a "
                    "replay: --json (standard JSON, NaN as \"NaN\") is not for export", 2)
    rec = tools.get(store, args.id)
    # The journal is read a page at a time (its outcomes may be hundreds of megabytes),
    # first to name a damaged record before anything is printed, then to print each
    # record as it is read: the text one read of it all printed, to the byte.
    for _ in tools.journal_pages(store, rec.workflow_id):
        pass
    head = History.head_from_store(store, rec.workflow_id)
    records = (r for page in tools.journal_pages(store, rec.workflow_id) for r in page)
    for text in head.export_text(records):
        sys.stdout.write(text)
    sys.stdout.write("\n")
    _one_run(store, rec.workflow_id, (head.run_id, head.attempt),
             "while it was exported: the history printed may mix two runs; export it "
             "again")


def _replay(store: Any, args: argparse.Namespace) -> None:
    import trio

    from .hosts.workflow import History, replay_history
    from .persistence import FINAL_STATUSES, WorkflowStatus

    make_importable(args.module)
    if args.ids and (args.status or args.all):
        raise _Fail("--id selects the workflows itself: it cannot be combined with "
                    f"{'--status' if args.status else '--all'}", 2)
    if args.status and args.all:
        raise _Fail("--all replays every workflow: it cannot be combined with --status", 2)
    # a workflow whose row or journal is damaged is named (exit 2), the others replayed
    damaged: dict[str, DamagedRecord] = {}
    cut = None  # (an id that is not UTF-8 text: the listing ends at it, as list's does)
    if args.ids:
        ids = []
        for wid in dict.fromkeys(args.ids):
            try:
                ids.append(tools.get(store, wid).workflow_id)
            except ToolError as exc:  # bad input: exit 1 must mean only that a workflow differs
                raise _Fail(str(exc), 2) from None
            except DamagedRecord as exc:
                ids.append(wid)
                damaged[wid] = exc
    else:
        statuses = _statuses(args.status)
        if not statuses and not args.all:
            statuses = [s.value for s in WorkflowStatus if s not in FINAL_STATUSES]
        try:
            ids = [r.workflow_id for r in store.list_workflows(statuses or None)]
        except DamagedRecord:  # (as list steps over them)
            rows: list[DamagedRecord] = []
            ids = [r.workflow_id
                   for r in store.list_past_damage(statuses or None, None, rows)]
            damaged.update((d.workflow_id, d) for d in rows)
            ids += list(damaged)
            cut = None if rows[-1].id_is_text else rows[-1].workflow_id

    gone = _check_imports(store, [wid for wid in ids if wid not in damaged], args.module)

    async def replay_all() -> list[Any]:
        results: list[Any] = []
        for wid in ids:
            if wid in gone or wid in damaged:
                results.append(gone[wid] if wid in gone else damaged[wid])
                continue
            try:
                history = History.from_store(store, wid)
            except DamagedRecord as exc:  # a record of its journal
                results.append(damaged.setdefault(wid, exc))
                continue
            results.append(await replay_history(history))
        return results

    results = trio.run(replay_all)
    differ = [r for r in results if not isinstance(r, DamagedRecord) and not r.ok]
    if args.json:
        _print_json([_unread(store, r) if isinstance(r, DamagedRecord) else _replayed(r)
                     for r in results])
    else:
        # (an id is whole: what --id takes; a long one does not widen every line)
        width = min(max((len(r.workflow_id) for r in results), default=0), COLUMN_WIDTH)
        for r in results:
            said = (f"could not be read: {_damage(r)}" if isinstance(r, DamagedRecord)
                    else str(r))
            # (an id is shown as --id takes it, a backslash too; only one a store of
            # before holds unprintable is escaped)
            wid = r.workflow_id.ljust(width)
            print(f"{cell(wid)}  {_replay_text(said)}")
        print(f"{len(results)} workflow(s) replayed: "
              f"{len(results) - len(differ) - len(damaged)} ok, {len(differ)} differ"
              + (f", {len(damaged)} could not be read" if damaged else ""))
    if damaged:
        sys.stdout.flush()
        first, *others = (r for r in results if isinstance(r, DamagedRecord))
        raise _Fail(f"store {store.path or args.store!r} {_is_damaged(first)}: {first}"
                    + (f" (and {len(others)} other workflow(s): "
                       f"{', '.join(repr(d.workflow_id) for d in others[:5])}"
                       f"{', ...' if len(others) > 5 else ''})" if others else "")
                    + ("; the other workflows were replayed" if len(results) > len(damaged)
                       else "")
                    + (f" (not those after {cut!r} in start order: no read can select past "
                       "an id that is not UTF-8 text)" if cut is not None else "")
                    + (f"; of them, {len(differ)} differ from their journal: "
                       f"{', '.join(r.workflow_id for r in differ)}" if differ else ""), 2)
    if differ:
        raise _Fail(f"{len(differ)} of {len(results)} workflow(s) differ from their "
                    f"journal: {', '.join(r.workflow_id for r in differ)}")


#: the most of a replay's result a line of ``replay`` shows (``--json``: whole): more
#: than a table's value, as it is what the line is for; a difference's own message
#: (its advice too) stays whole, a workflow's error of any size does not
REPLAY_WIDTH = 1000


def _replay_text(said: str) -> str:
    """A replay's result on one line: its newlines and control characters escaped
    (the error the code raised is the workflow's data), cut at :data:`REPLAY_WIDTH`
    characters of the text with how many more there are."""
    if len(said) <= REPLAY_WIDTH:
        return one_line(said)
    return (f"{one_line(said[:REPLAY_WIDTH - 1])}… ({len(said) - REPLAY_WIDTH + 1:,} more "
            "characters: --json shows them)")


def _check_imports(store: Any, ids: list[str], modules: Sequence[str]) -> dict[str, Any]:
    """Each selected workflow's code must import here: code that cannot be found is a
    wrong folder or a missing ``--module``, not a difference from the journal. A function
    its module (which imports) no longer has was renamed or removed: that workflow
    differs (a node blocks it), its ``ReplayResult`` by id in what is returned; so does
    a name that is no workflow function now (a sync ``def``, an activity), as
    ``replay_history`` reports both."""
    from ._targets import function_gone, import_target, workflow_refused_now
    from .hosts.workflow import ReplayResult, code_gone

    # a workflow function's name: what it is now (a sentence's end) and the replay's
    # ending, or None if it runs
    seen: dict[str, tuple[str, str] | None] = {}
    gone: dict[str, Any] = {}
    for wid in ids:
        rec = store.get_workflow(wid)
        if rec is None:
            continue
        if rec.name not in seen:
            seen[rec.name] = None
            try:
                found = import_target(rec.name)
            except Exception as exc:
                # its module imports but has no such function: gone; any other failure
                # is reported alike
                missing = function_gone(rec.name, exc)
                if missing is None:
                    where = f" (imported from {', '.join(modules)})" if modules else ""
                    raise _Fail(f"cannot import {rec.name!r}, the code of workflow {wid!r}"
                                f"{where}: {type(exc).__name__}: {exc}; run from the "
                                "application's folder or pass --module PATH", 2) from None
                seen[rec.name] = (missing, "its code is gone")
            else:
                refused = workflow_refused_now(found)
                if refused is not None:
                    seen[rec.name] = (refused, "its code is no workflow function")
        now = seen[rec.name]
        if now is not None:
            why, ending = now
            gone[wid] = ReplayResult(wid, rec.name, str(rec.status),
                                     code_gone(wid, rec.name, why),
                                     len(store.journal_sizes(wid)), 0, ending)
    return gone


def _unread(store: Any, damaged: DamagedRecord) -> dict[str, Any]:
    """A workflow ``replay`` could not read (its row, or a record of its journal, is
    damaged), as :func:`_replayed` shows a replayed one: not ok, nothing checked, the
    error naming what is damaged (``seq``: the journal record, or null: the row)."""
    rec = None if damaged.seq is None else store.get_workflow(damaged.workflow_id)
    return {"workflow_id": damaged.workflow_id, "name": None if rec is None else rec.name,
            "status": None if rec is None else str(rec.status), "ok": False,
            "records": len(store.journal_sizes(damaged.workflow_id)), "checked": 0,
            "ending": "could not be read: the store is damaged",
            "error": {"message": str(damaged), "seq": damaged.seq, "recorded": None,
                      "current": None, "where": None}}


def _damage(damaged: DamagedRecord) -> str:
    """What is damaged, without the workflow id its line starts with."""
    return str(damaged).removeprefix(f"workflow {damaged.workflow_id!r}: ")


def _replayed(result: Any) -> dict[str, Any]:
    err = result.error
    return {"workflow_id": result.workflow_id, "name": result.name, "status": result.status,
            "ok": result.ok, "records": result.records, "checked": result.checked,
            "ending": result.ending,
            "error": None if err is None else {"message": str(err), "seq": err.seq,
                                               "recorded": err.recorded,
                                               "current": err.current,
                                               "where": err.where}}


def make_importable(modules: Sequence[str]) -> None:
    """Make the application's code importable: the current directory, then each of
    ``modules`` (a folder to import from, or a module to import: a dotted name or a
    file.py, whose folder is added)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for spec in modules:
        if not spec.strip():  # (Path("") is the current folder: not what was meant)
            raise _Fail(f"--module {spec!r}: an empty path (give a folder, a file.py or a "
                        "dotted module name)", 2)
        path = Path(spec)
        if path.is_dir():
            sys.path.insert(0, str(path.resolve()))
            continue
        if not is_script(spec) and ("/" in spec or os.sep in spec or path.is_file()):
            what = "a file, not a .py one" if path.is_file() else "no such folder"
            raise _Fail(f"--module {spec!r}: {what} (give a folder, a file.py or a "
                        "dotted module name)", 2)
        try:
            with exit_is_import_error(spec):
                if is_script(spec):
                    if not path.is_file():
                        raise _Fail(f"--module {spec!r}: no such file", 2)
                    sys.path.insert(0, str(path.resolve().parent))
                    module_spec = script_spec(path.stem, path)
                    assert module_spec.loader is not None
                    module = importlib.util.module_from_spec(module_spec)
                    sys.modules[path.stem] = module
                    module_spec.loader.exec_module(module)
                else:
                    importlib.import_module(spec)
        except _Fail:
            raise
        except Exception as exc:
            raise _Fail(f"--module {spec!r}: cannot import it: {type(exc).__name__}: {exc}",
                        2) from None


#: commands that only read: the store is opened read-only (its file never changes)
_READ_ONLY = frozenset({"replay", "export"})
#: commands that only read: read-only too on a read-only file system (see open_store)
_READS = _READ_ONLY | {"list", "show", "history"}

_COMMANDS = {"list": _list, "show": _show, "history": _history, "signal": _signal,
             "resolve": _resolve, "reject": _reject, "cancel": _cancel, "start": _start,
             "terminate": _terminate, "retry": _retry, "prune": _prune, "replay": _replay,
             "export": _export}
#: the statuses ``prune`` takes
_PRUNABLE = ("completed", "failed", "cancelled")


# ------------------------------------------------------------------ helpers
_record = tools.record_json
_when = when


def _short(value: Any, width: int | None = 40) -> str:
    """Compact JSON, cut to ``width`` characters (``None``: whole)."""
    if value in (None, {}, []):
        return ""
    return _cut(json.dumps(value, default=str, separators=(",", ":")), width)


def _print_json(value: Any) -> None:
    """``--json``: standard JSON (a stored NaN is ``"NaN"``, as the console shows it)."""
    print(tools.standard_json(value, default=str))


def _done(args: argparse.Namespace, data: dict[str, Any], text: str,
          note: str | None = None) -> None:
    """The answer of a write; ``note``: a warning that does not make it fail (a line
    ``note: ...`` on stderr, or the JSON's ``note``)."""
    if args.json:
        _print_json(data if note is None else {**data, "note": note})
    else:
        print(escaped(text))
        if note is not None:
            print(escaped(f"note: {note}"), file=sys.stderr)
