"""``garrison schedules --store DB ...``: list and control the schedules of a store.

Works whether or not a node runs on the store (the store is opened without its lock):
``pause``, ``resume``, ``trigger`` and ``delete`` commit at once and a running node
picks them up immediately (a stopped one when it starts). ``trigger`` creates the
workflow ``<id>@<now>`` ``pending``: the node starts it (through its host's queue).

Exit codes as ``garrison workflows``: 0 done; 1 no such schedule; 2 bad arguments or an
unusable store; 141 when the reader of stdout went away.
"""

from __future__ import annotations

import argparse
import sqlite3
from typing import Any

from . import _store_tools as tools
from ._cli_options import COLUMN_WIDTH, CommandGroup, print_table, run_with_store
from ._cli_workflows import _print_json, make_importable
from ._errors import GarrisonError
from ._store_tools import ToolError, when


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the ``schedules`` sub-command on the main parser."""
    group = CommandGroup(sub, "schedules", common, dest="sc_command",
                         help="list and control the schedules of a workflow store",
                         description="List and control the schedules of a workflow store, "
                                     "with or without a node running on it. Every option is "
                                     "accepted before or after the command.")
    ls = group.verb("list", help="list schedules (--json: one JSON array of full schedule "
                                 "records)")
    ls.add_argument("--wide", action="store_true",
                    help="pad the ID column to the longest id (the table pads it to at most "
                         "40 characters; an id is never cut)")
    for name, helptext in (
            ("pause", "stop starting workflows on its ticks"),
            ("resume", "start workflows on its ticks again, from the next one"),
            ("trigger", "start its workflow now"),
            ("delete", "remove the schedule (its workflows go on)")):
        p = group.verb(name, help=helptext)
        p.add_argument("id", help="the schedule id (a config schedule's id carries its "
                                  "namespace: app:nightly_report)")
    group.parser.set_defaults(func=cmd_schedules)


def cmd_schedules(args: argparse.Namespace) -> int:
    """Run one ``garrison schedules`` command; returns the exit status."""
    return run_with_store("schedules", args, lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    from .persistence._file import store_error

    # (a verb that only reads opens a store on a read-only file system read-only)
    store = tools.open_store(args.store, reads=args.sc_command in _READS)
    try:
        _COMMANDS[args.sc_command](store, args)
    except ToolError:
        raise
    except GarrisonError as exc:
        raise ToolError(str(exc), 2) from None
    except ValueError as exc:  # a stored spec this version cannot read
        raise ToolError(str(exc), 2) from None
    except sqlite3.Error as exc:
        raise ToolError(str(store_error(args.store, args.store, exc, 5.0)), 2) from None
    except BrokenPipeError:
        raise
    except OSError as exc:  # (named as the store names itself: never with a password)
        raise ToolError(f"store {store.path or args.store!r}: {exc.strerror or exc}",
                        2) from None
    finally:
        store.close()


def _list(store: Any, args: argparse.Namespace) -> None:
    rows = store.schedules()
    if args.json:
        _print_json([tools.schedule_json(r) for r in rows])
        return
    if not rows:
        print("no schedules")
        return
    # (an id is whole, what schedules pause ID takes, its column padded as workflows
    # list pads one, --wide to the longest; the other values stay whole, a cron spec's
    # time zone too)
    table = [(r.schedule_id, r.workflow,
              f"cron {r.cron} {r.timezone}" if r.cron else f"every {r.every:.0f}s",
              # (a paused one has no next tick: resuming sets it from now)
              r.overlap, "paused" if r.paused else "active",
              "-" if r.paused else when(r.next_tick),
              r.last_workflow or "") for r in rows]
    print_table(("ID", "WORKFLOW", "WHEN", "OVERLAP", "STATE", "NEXT", "LAST WORKFLOW"),
                table, id_width=None if args.wide else COLUMN_WIDTH)


def _done(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        _print_json(data)
    else:
        print(text)


def _pause(store: Any, args: argparse.Namespace) -> None:
    tools.pause_schedule(store, args.id)
    _done(args, {"schedule_id": args.id, "paused": True}, f"schedule {args.id!r} paused")


def _resume(store: Any, args: argparse.Namespace) -> None:
    tools.resume_schedule(store, args.id)
    rec = tools.get_schedule(store, args.id)
    _done(args, {"schedule_id": args.id, "paused": False,
                 "next_tick": tools.when_json(rec.next_tick)},
          f"schedule {args.id!r} resumed; next tick {when(rec.next_tick)}")


def _trigger(store: Any, args: argparse.Namespace) -> None:
    from ._errors import GarrisonError
    from ._targets import import_target
    from .hosts.workflow._schedules import check_input

    rec = tools.get_schedule(store, args.id)
    make_importable([])  # the current folder, as ``workflows start`` has it
    try:  # as ``workflows start`` checks its target: else a workflow no node can run
        fn = import_target(rec.workflow)
    except Exception as exc:
        raise ToolError(f"cannot import {rec.workflow!r}, the code of schedule {args.id!r}: "
                        f"{type(exc).__name__}: {exc} (run the command where the "
                        "application's code is importable)", 2) from None
    try:  # and its arguments, as the node's trigger does (code changed since)
        check_input(args.id, fn, rec.workflow, rec.input)
    except (TypeError, ValueError, GarrisonError) as exc:
        raise ToolError(str(exc), 2) from None
    wid = tools.trigger_schedule(store, args.id)
    _done(args, {"schedule_id": args.id, "workflow_id": wid},
          f"schedule {args.id!r} triggered: workflow {wid!r}")


def _delete(store: Any, args: argparse.Namespace) -> None:
    from_config = tools.delete_schedule(store, args.id)
    note = (" (it is declared in a config: a node started with that config creates it "
            "again; remove its entry, or pause it instead)" if from_config else "")
    _done(args, {"schedule_id": args.id, "deleted": True, "from_config": from_config},
          f"schedule {args.id!r} deleted{note}")


_COMMANDS = {"list": _list, "pause": _pause, "resume": _resume, "trigger": _trigger,
             "delete": _delete}
#: the verbs that only read (``reads``: a store on a read-only file system is read)
_READS = frozenset({"list"})
