"""``garrison nodes --store URL [list | drain NAME]``: the nodes of a cluster.

``list`` (the default) prints the live nodes of the PostgreSQL store's cluster: name,
status (``active`` / ``draining``), started, last heartbeat (the server's clock) and
how many unfinished workflows each runs. ``drain NAME`` marks that node draining: it
takes no new work, hands its workflows to the others at their next durable point (at
once for those that wait) without waiting out its lease, and a ``garrison run`` node
exits once it has none.

Exit codes: 0 done; 1 no live node of that name; 2 a store that cannot be used (or
one that is not PostgreSQL: a SQLite store has one node and no cluster), or a node
name that is not valid text; 141 (quietly) when the reader of the output went away.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from typing import Any

from . import _store_tools as tools
from ._cli_options import CommandGroup, print_table, run_with_store
from ._node import check_node_name
from ._store_tools import ToolError, when


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the ``nodes`` sub-command on the main parser."""
    group = CommandGroup(sub, "nodes", common, dest="nodes_command", required=False,
                         store_help="the store: a postgresql://user@host:port/db URL",
                         help="list or drain the nodes of a cluster",
                         description="The live nodes of a PostgreSQL store's cluster; "
                                     "'drain NAME' hands that node's workflows to the others. "
                                     "Every option is accepted before or after the command.")
    # (list is the default verb: --wide is taken with it and without it)
    wide_help = ("pad the NAME column to the longest name (the table pads it to at most "
                 "80 characters; a name is never cut)")
    group.parser.add_argument("--wide", action="store_true", help=wide_help)
    ls = group.verb("list", help="the live nodes (the default)")
    ls.add_argument("--wide", action="store_true", default=argparse.SUPPRESS, help=wide_help)
    drain = group.verb("drain", help="hand a node's workflows to the other nodes; it takes "
                       "no new work and a garrison run node exits when empty")
    drain.add_argument("name")
    group.parser.set_defaults(func=cmd_nodes)


def cmd_nodes(args: argparse.Namespace) -> int:
    """Run ``garrison nodes``; returns the exit status (see the module; a reader that
    went away, ``| head``, ends it quietly as for ``garrison workflows``)."""
    return run_with_store("nodes", args, lambda: _nodes(args))


def _nodes(args: argparse.Namespace) -> None:
    if args.nodes_command == "drain":
        try:  # (a command line's undecodable byte is a lone surrogate: no store keeps it;
            # a name over 1,000 bytes, or with '/' or '@', no node can have)
            check_node_name(args.name)
        except ValueError as exc:
            raise ToolError(str(exc), 2) from None
    store = tools.open_store(args.store)
    try:
        if not hasattr(store, "set_fence"):
            raise ToolError(f"{args.store!r} is a SQLite store: it has one node and no "
                            "cluster (clusters need a postgresql:// store)", 2)
        from .persistence._pg_cluster import PgCluster

        cluster = PgCluster(store)
        if args.nodes_command == "drain":
            try:
                changed = cluster.set_status("draining", name=args.name)
            finally:
                cluster.close()
            if not changed:
                raise ToolError(f"no live node named {args.name!r}", 1)
            if args.json:
                print(json.dumps({"name": args.name, "status": "draining"}))
            else:
                print(f"draining {args.name}")
            return
        try:
            nodes = cluster.nodes()
            now = cluster.server_now()  # (the clock leases and heartbeats are kept in)
        finally:
            cluster.close()
        if args.json:
            print(json.dumps([{"name": n.name, "status": n.status, "started": _iso(n.started),
                               "heartbeat": _iso(n.heartbeat), "workflows": n.workflows,
                               "epoch": n.epoch, "lease_lapsed": n.lease_until < now,
                               **n.info} for n in nodes]))
            return
        if not nodes:
            print("no nodes")  # (as workflows list and schedules list say theirs)
            return
        # a node whose lease lapsed is gone for the cluster (its workflows are claimed,
        # its name free), though no live node has marked it lost yet (none may be left)
        # (a name is printable text since the node checks it; one a store of before
        # holds with a newline or escape would forge a row, or act on the terminal; one
        # of up to 1,000 bytes is whole, what drain NAME takes, but does not widen the
        # other rows; with --wide it does)
        rows = [(n.name if n.name.isprintable() else repr(n.name)[1:-1],
                 n.status + (", lease lapsed" if n.lease_until < now else ""),
                 _iso(n.started), f"{max(now - n.heartbeat, 0):.1f}s ago", str(n.workflows))
                for n in nodes]
        print_table(("NAME", "STATUS", "STARTED", "HEARTBEAT", "WORKFLOWS"), rows,
                    id_width=None if args.wide else NAME_WIDTH)
    finally:
        store.close()


#: the widest the NAME column is padded to (a default name, host-pid, is long on some
#: clouds)
NAME_WIDTH = 80


def _iso(seconds: float) -> str:
    return when(_dt.datetime.fromtimestamp(seconds, _dt.UTC))
