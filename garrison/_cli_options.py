"""The options shared by the ``garrison`` command groups (``workflows``, ``schedules``,
``nodes``): each is accepted before or after the group's verb
(``garrison workflows --store S list`` and ``garrison workflows list --store S``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from ._store_tools import ToolError

__all__ = ["BROKEN_PIPE", "STORE_HELP", "CommandGroup", "require_store", "run_verb"]

#: the exit status when the reader of the output went away (128 + SIGPIPE, as a shell's)
BROKEN_PIPE = 128 + signal.SIGPIPE

#: the help of ``--store`` on every command that takes it
STORE_HELP = "the store: a SQLite file or a postgresql://user@host:port/db URL"


def _options(common: argparse.ArgumentParser, store_help: str,
             default: Any) -> argparse.ArgumentParser:
    """``--store``, ``--json`` and ``common``'s options; ``default``: their default
    (``None``: the group's own, ``None`` and ``False``)."""
    options = argparse.ArgumentParser(add_help=False, parents=[common])
    options.add_argument("--store", default=default, help=store_help)
    options.add_argument("--json", action="store_true",
                         default=False if default is None else default,
                         help="machine-readable output")
    return options


class CommandGroup:
    """The parser of a command group (``.parser``) and its verbs (:meth:`verb`), which
    all take the group's options (``--store``, ``--json``, ``--log-level``,
    ``--log-format``). Given after the verb, an option wins over the same given
    before it. ``--store`` is required: ``garrison._cli.main`` says so, with the
    group's usage, when it is given on neither side."""

    def __init__(self, sub: Any, name: str, common: argparse.ArgumentParser, *,
                 dest: str, required: bool = True, store_help: str = STORE_HELP,
                 **kwargs: Any) -> None:
        self.parser: argparse.ArgumentParser = sub.add_parser(
            name, parents=[_options(common, store_help, None)], **kwargs)
        self.parser.set_defaults(group_parser=self.parser)
        # the verbs' copies set nothing unless given (a verb's namespace overwrites)
        self._verb_options = _options(common, store_help, argparse.SUPPRESS)
        self.verbs = self.parser.add_subparsers(dest=dest, required=required)

    def verb(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add verb ``name`` (``help=...``); add its own arguments to what it returns
        (not the group's options again: the verbs share those)."""
        parser: argparse.ArgumentParser = self.verbs.add_parser(
            name, parents=[self._verb_options], **kwargs)
        # what the usage line shows, and argparse's "required: ..." names (else it
        # names the parser's variable, ``sc_command``)
        self.verbs.metavar = "{" + ",".join(self.verbs.choices) + "}"
        return parser


def require_store(args: argparse.Namespace) -> str:
    """``--store``, given before or after the verb; else the group's usage and
    ``required: --store`` on stderr, exit 2 (as argparse says of a required option)."""
    store: str | None = args.store
    if store is None:
        args.group_parser.error("the following arguments are required: --store (before "
                                "or after the command)")
    return store  # type: ignore[return-value]


def run_verb(group: str, run: Callable[[], None]) -> int:
    """Run one verb of ``garrison GROUP``; returns the exit status: 0, a
    :class:`~garrison._store_tools.ToolError`'s code (its message one line on stderr),
    or :data:`BROKEN_PIPE`, silently, when the reader (``| head``) went away."""
    try:
        run()
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's last flush of what is still
        # buffered cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    except ToolError as exc:
        print(f"garrison {group}: {exc}", file=sys.stderr)
        return exc.code
    return 0
