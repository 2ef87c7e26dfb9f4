"""The options shared by the ``garrison`` command groups (``workflows``, ``schedules``,
``nodes``): each is accepted before or after the group's verb
(``garrison workflows --store S list`` and ``garrison workflows list --store S``)."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, NoReturn

from ._store_tools import ToolError

__all__ = ["BROKEN_PIPE", "COLUMN_WIDTH", "STORE_HELP", "CommandGroup", "Parser", "cell", "cut",
           "escaped", "guard_stderr", "one_line", "print_last_words", "print_table",
           "print_table_pages",
           "require_store", "run_verb", "run_with_store", "store_of_config"]

#: the exit status when the reader of the output went away (128 + SIGPIPE, as a shell's)
BROKEN_PIPE = 128 + signal.SIGPIPE

#: the help of ``--store`` on every command that takes it
STORE_HELP = "the store: a SQLite file or a postgresql://user@host:port/db URL"


class Parser(argparse.ArgumentParser):
    """The parser of ``garrison`` and of each of its commands and verbs (``add_parser``
    makes its own kind). A command with no verbs of its own reads its positional
    arguments wherever they stand among its options (``start TARGET --id X ARGS``:
    argparse alone gave TARGET and the optional ARGS the one word before ``--id``, and
    refused the arguments after it), and says an argument it does not know itself,
    under its own usage (argparse left that to ``garrison``'s usage, which shows none
    of the command's options). The words after ``--`` (``signal ID TOPIC --json --
    -1e3``) are its arguments whatever they look like, read after those before it, in
    their order: each stands in the parse as a word no option can be (a command line
    holds no NUL), then is put back."""

    _reading = False  # (the intermixed parse calls parse_known_args again, twice)
    _words: Sequence[str] = ()  # (what it was given: its error looks at them)
    #: while a command line is parsed, the prog and the words of its first parser
    #: (``garrison``): a hint's line is the user's whole line, options before the verb
    #: kept (``workflows --store s.db signal``), not the verb's words alone
    _whole: ClassVar[tuple[str, Sequence[str]] | None] = None

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # an option's own value ``--``, which only ``--opt=--`` gives it (``--opt --``
        # gives it none): argparse of Python 3.11 drops it as it drops the ``--`` that
        # ends the options, and gave the option an empty list, which its checks never
        # see (a traceback further on); read as ``--opt=-x`` is, and checked so
        if action.option_strings and arg_strings == ["--"] \
                and action.nargs in (None, argparse.OPTIONAL):
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if not self._reading:
            self._words = list(sys.argv[1:] if args is None else args)
        if Parser._whole is None:  # (the command line's first parser: its verbs' come next)
            Parser._whole = (self.prog, self._words)
            try:
                return self._parse_known(args, namespace)
            finally:
                Parser._whole = None
        return self._parse_known(args, namespace)

    def _parse_known(self, args: Any, namespace: Any) -> Any:
        positionals = self._get_positional_actions()
        if self._reading or self._subparsers is not None or any(
                a.type is not None or a.choices is not None for a in positionals):
            return super().parse_known_args(args, namespace)
        words = list(self._words)
        after: list[str] = []
        if "--" in words:  # (argparse read a word after it as an option, or gave the
            # optional argument before an option nothing: `adjust --json -- -1e3`)
            cut = words.index("--")
            words, after = words[:cut], words[cut + 1:]
        stand_ins = {f"\0{i}": word for i, word in enumerate(after)}
        namespace, extras = self._intermixed([*words, *stand_ins], namespace)
        unknown = [w for w in extras if w.startswith("-") and w not in stand_ins]
        if unknown and any(w in stand_ins for w in extras):
            # an unknown option split the arguments, and argparse gave those after it
            # nothing (`check a.yaml --json -- -b.yaml` left -b.yaml over, said as if
            # unknown too): a word after -- is one too many only read without it
            _, again = self._intermixed([*(w for w in words if w not in unknown),
                                         *stand_ins], argparse.Namespace())
            extras = [w for w in extras if w not in stand_ins or w in again]
        for action in self._get_optional_actions():  # (`--id -- x`: --id has no value)
            value = getattr(namespace, action.dest, None)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and v in stand_ins for v in values):
                self.error(f"argument {'/'.join(action.option_strings)}: expected one "
                           "argument")
        for action in positionals:
            value = getattr(namespace, action.dest, None)
            if isinstance(value, str):
                setattr(namespace, action.dest, stand_ins.get(value, value))
            elif isinstance(value, list):
                setattr(namespace, action.dest, [stand_ins.get(v, v) for v in value])
        extras = [stand_ins.get(word, word) for word in extras]
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + self._numbers_hint(extras, stand_ins))
        return namespace, extras

    def _intermixed(self, words: list[str], namespace: Any) -> Any:
        """argparse's intermixed parse of ``words``: (namespace, extras)."""
        self._reading = True
        try:
            return self.parse_known_intermixed_args(words, namespace)
        finally:
            self._reading = False

    def _numbers_hint(self, extras: list[str], after: dict[str, str]) -> str:
        """How to give the values of ``extras`` read as options that are numbers
        (``-1e3``: argparse takes only ``-5`` and ``-1.5`` as numbers), for an
        ``unrecognized arguments`` error: after ``--``, with the command line that
        does; ``""`` for none (``--yes`` is an option the command lacks)."""
        numbers = [w for w in extras if _DASHED_NUMBER.match(w) and w not in after.values()]
        if not numbers:
            return ""
        words = [w for w in self._words if w not in numbers]
        cut = words.index("--") if "--" in words else len(words)
        line = self._whole_line([*words[:cut], "--", *numbers, *words[cut + 1:]])
        return (f" ({numbers[0]!r} starts with '-', read as an option: give such a value "
                f"after --, as in {line})")

    def _whole_line(self, words: list[str]) -> str:
        """The user's command line with this parser's own words (those after its verb)
        written as ``words``: what comes before them (``garrison workflows --store s.db
        signal``) kept as the user wrote it."""
        prog, whole = Parser._whole or (self.prog, self._words)
        mine = len(self._words)
        before = list(whole[:len(whole) - mine]) if mine else list(whole)
        if whole[len(before):] != list(self._words):  # (not the end of the line it read)
            prog, before = self.prog, []
        return f"{prog} {shlex.join([*before, *words])}"

    def _arguments_after_dashes(self, words: list[str], first: int) -> str:
        """The user's command line (:meth:`_whole_line`) with ``words`` (a verb's,
        without ``--``) written with the word at ``first``, an argument that starts with
        ``-``, and the arguments after it moved after ``--``, in their order, the
        options among them (with their values) kept before it: ``signal -x adjust
        --json`` as ``signal --json -- -x adjust`` (``signal -- -x`` left the topic
        out, and failed again)."""
        options: list[str] = []
        arguments: list[str] = []
        rest = iter(words[first:])
        for word in rest:
            action = self._option_string_actions.get(word.split("=", 1)[0])
            if action is None:
                arguments.append(word)
                continue
            options.append(word)
            if "=" not in word and action.nargs is None:  # (its value: the next word)
                options.extend(itertools.islice(rest, 1))
        return self._whole_line([*words[:first], *options, "--", *arguments])

    def error(self, message: str) -> NoReturn:
        """argparse's error, and for an option whose value starts with ``-`` (a workflow
        id may: ``--id -x``), which argparse reads as an option, how to write it (not
        for an option of its own given next: ``--id --json`` lacks the id)."""
        said = _NO_VALUE.fullmatch(message)
        words = list(self._words)
        if said is not None:
            names = said["option"].split("/")
            for word, value in itertools.pairwise(words):
                if word in names and value.startswith("-") and value != "--" \
                        and value.split("=", 1)[0] not in self._option_string_actions:
                    message += (f" (its value {value!r} starts with '-', read as an "
                                f"option: write {word}={value})")
                    break
        elif message.startswith(_REQUIRED) and "--" not in words \
                and self._subparsers is None and any(  # (an argument, not an option)
                    not name.startswith("-")
                    for name in message.removeprefix(_REQUIRED).split(", ")):
            dashed = [i for i, w in enumerate(words) if w.startswith("-") and w != "-"
                      and w.split("=", 1)[0] not in self._option_string_actions]
            if dashed:  # (an id or value given, but read as an unknown option)
                line = self._arguments_after_dashes(words, dashed[0])
                message += (f" ({words[dashed[0]]!r} starts with '-', read as an option: "
                            f"give such a value after --, as in {line})")
        super().error(escaped(message))  # (it quotes the user's words, as given)


#: a number written with a dash, which argparse reads as an option (``-1e3``, ``-.5``)
_DASHED_NUMBER = re.compile(r"-\.?\d")

#: the start of argparse's error for missing arguments (``id, topic``) or options
_REQUIRED = "the following arguments are required: "

#: argparse's error for an option given no value: ``argument --id: expected one argument``
_NO_VALUE = re.compile(r"argument (?P<option>-[^ :]*): expected one argument")


def _options(common: argparse.ArgumentParser, store_help: str,
             default: Any) -> argparse.ArgumentParser:
    """``--store``, ``--json`` and ``common``'s options; ``default``: their default
    (``None``: the group's own, ``None`` and ``False``)."""
    options = argparse.ArgumentParser(add_help=False, parents=[common])
    options.add_argument("--store", default=default, help=store_help)
    options.add_argument("--config", default=default, metavar="FILE",
                         help="a YAML config: without --store, the store its workflow host "
                              "names; for workflows start, TARGET may be one of its entry ids")
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
        if "help" in kwargs and "description" not in kwargs:  # (its own --help says
            # what it does, as the group's list of verbs does)
            said = kwargs["help"]
            kwargs["description"] = said[:1].upper() + said[1:] + "."
        parser: argparse.ArgumentParser = self.verbs.add_parser(
            name, parents=[self._verb_options], **kwargs)
        # what the usage line shows, and argparse's "required: ..." names (else it
        # names the parser's variable, ``sc_command``)
        self.verbs.metavar = "{" + ",".join(self.verbs.choices) + "}"
        return parser


def require_store(args: argparse.Namespace) -> None:
    """``--store`` or ``--config``, given before or after the verb; else the group's
    usage and ``required: --store`` on stderr, exit 2 (as argparse says of a required
    option)."""
    if args.store is None and args.config is None:
        args.group_parser.error("the following arguments are required: --store (before "
                                "or after the command; or --config FILE naming it)")


def run_with_store(group: str, args: argparse.Namespace, run: Callable[[], None]) -> int:
    """:func:`run_verb` of ``run`` once ``args.store`` is known: ``--store``, or the
    store of ``--config``'s workflow host (:func:`store_of_config`)."""
    require_store(args)

    def with_store() -> None:
        if args.store is None:
            args.store = store_of_config(args.config)
        run()

    return run_verb(group, with_store)


def store_of_config(path: str) -> str:
    """The store of the config ``path``'s workflow host (its ``workflows`` entry's if
    it has several), as ``garrison run FILE`` opens it; else :class:`ToolError` (2)
    saying why, with the stores it names."""
    from ._errors import GarrisonError
    from .config import WorkflowHostEntry
    from .config._loader import load_for_tool

    try:
        config = load_for_tool(path)  # (the store is checked as the verb opens it)
    except GarrisonError as exc:
        raise ToolError(str(exc), 2) from None
    stores = {entry_id: entry.store for entry_id, entry in config.entries.items()
              if isinstance(entry, WorkflowHostEntry) and entry.store is not None}
    default = [store for entry_id, store in stores.items()
               if entry_id.rpartition(":")[2] == "workflows"]
    if len(default) == 1:
        return default[0]
    if len(stores) == 1:
        return next(iter(stores.values()))
    named = ", ".join(f"{entry_id} ({store})" for entry_id, store in stores.items())
    raise ToolError(f"give --store: the config {path} names "
                    + (f"several stores: {named}" if stores else "no store (no workflow.host "
                       "entry with a store)"), 2)


class _OutputFailed(Exception):
    """Writing the command's output failed (a full disk): not the store's failure, so
    not an ``OSError`` a verb would report as one."""


class _Output:
    """The command's standard output, whose write errors are :class:`_OutputFailed`
    (a reader gone, ``BrokenPipeError``, stays itself)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop_output(stdout: Any) -> None:
    """Point ``stdout`` (whose writes failed) at /dev/null, so that the interpreter's
    last flush of what is still buffered cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stdout.fileno())
    os.close(devnull)


def escaped(line: str) -> str:
    """``line`` with each control character of its data (a workflow's error: a terminal
    escape, a carriage return writing over the line) shown as its escape, not acted on;
    a tab and newlines stay."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], line)


#: the control characters a text line shows escaped (all but tab and newline)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` as :func:`escaped` shows it, its newlines escaped too (``\\n``): one
    line of a listing whatever its data holds (a script reads such output line by
    line). A backslash of the data shows doubled (``\\\\``), so that a ``\\n`` the
    text holds as two characters does not read as an escaped newline."""
    return escaped(text.replace("\\", "\\\\")).replace("\n", "\\n")


def cell(value: str) -> str:
    """A table's value on one line: as it is when printable (an id as the commands take
    it, a backslash too), else as :func:`one_line` shows it, a tab escaped too (``\\t``):
    an id a store of before holds (the id rule came later) keeps its row and columns."""
    return value if value.isprintable() else one_line(value).replace("\t", "\\t")


#: the widest a table's column of ids is padded to (``workflows list``, ``schedules
#: list``, ``replay``): a longer id (up to 1,000 bytes) is whole, as the commands take
#: it, and pushes only its own row's other values along
COLUMN_WIDTH = 40


def cut(text: str, width: int | None = COLUMN_WIDTH) -> str:
    """``text`` cut to ``width`` characters, its end marked ``…`` (``None``: whole)."""
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                width: int | None = None, id_width: int | None = None) -> None:
    """``rows`` in columns under ``header``, each as wide as its longest value; a value
    of a column but the first and the last longer than ``width`` is :func:`cut`
    (``None``: whole; the last column is not padded, and its caller cuts it as it shows
    it). The first column (an id, a node's name: what the commands take) is never cut:
    it is padded to at most ``id_width`` (``None``: its longest), a longer value pushing
    only its own row along."""
    print_table_pages(header, [rows], width, id_width)


def print_table_pages(header: Sequence[str], pages: Iterable[Sequence[Sequence[str]]],
                      width: int | None = None, id_width: int | None = None,
                      least: Sequence[int] = ()) -> None:
    """:func:`print_table` of rows that come a page at a time, each printed as it comes
    (a store's every workflow is not held to print them): the columns are as wide as
    the first page's values (and at least ``least``, column by column: the longest
    value a column can hold, where its values are few, as statuses), and a longer value
    in a later page pushes only its own row along, as a long id does."""
    widths: list[int] | None = None
    last = len(header) - 1
    for page in pages:
        rows = [[cell(c) for c in row] for row in page]
        if width is not None:
            rows = [[c if i in (0, last) else cut(c, width) for i, c in enumerate(row)]
                    for row in rows]
        if widths is None:
            widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
            if id_width is not None:
                widths[0] = min(widths[0], max(id_width, len(header[0])))
            widths = [max(w, n) for w, n in itertools.zip_longest(widths, least[:len(widths)],
                                                                   fillvalue=0)]
            print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_last_words(group: str, lines: list[str]) -> int | None:
    """Print ``lines`` (``garrison run``'s result) on standard output: ``None`` once
    written; :data:`BROKEN_PIPE`, silently, when the reader went away; 1 when they cannot
    be written (a full disk), said on stderr. (Only these lines: the user's code, which
    ran before, prints to standard output as it is.)"""
    stdout = sys.stdout
    if stdout is None:  # closed (``>&-``): nowhere to print, nothing lost that was asked
        return None
    try:
        for line in lines:
            print(line, flush=True)
    except BrokenPipeError:
        _drop_output(stdout)
        return BROKEN_PIPE
    except OSError as exc:
        _drop_output(stdout)
        print(f"garrison {group}: cannot write the result: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return None


class _ErrorChannel:
    """Standard error whose write errors (a full disk, a reader gone) are dropped: it
    is where the command says what went wrong, and a failure to say it must not turn
    into another exit status (exit 2, "did not start", read as 1) or a traceback."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError:
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def escape_unencodable() -> None:
    """Make standard output and error print a character their encoding lacks (``é``
    or ``日本`` in an id or a result, on an ASCII terminal, in a C locale, with
    ``PYTHONIOENCODING=ascii``) as its escape (``\\xe9``, ``\\u65e5``) instead of
    failing with a ``UnicodeEncodeError`` traceback: a command must not die of its own
    output. (Python's own for a C locale, ``surrogateescape``, fails alike on such a
    character: replaced too, a byte of a command line that is not text then shows as
    its escape, ``\\udcff``, as on standard error.)"""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) in ("strict", "surrogateescape"):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="backslashreplace")


def guard_stderr() -> None:
    """Make standard error safe for the command's messages: a closed one (``2>&-``)
    becomes /dev/null (``print(..., file=None)`` would write the message to standard
    output, into the result a caller reads), and a failing one drops what it cannot
    write (:class:`_ErrorChannel`)."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process's own, for good)
    elif not isinstance(sys.stderr, _ErrorChannel):
        sys.stderr = _ErrorChannel(sys.stderr)


def run_verb(group: str, run: Callable[[], int | None], *, acts: bool = True,
             unwritten: int = 1) -> int:
    """Run one verb of ``garrison GROUP``; returns the exit status: what ``run``
    returns (``None``: 0), a :class:`~garrison._store_tools.ToolError`'s code (its
    message one line on stderr), :data:`BROKEN_PIPE`, silently, when the reader
    (``| head``) went away, or ``unwritten`` when the output cannot be written (said
    on stderr: what the verb wrote to the store before printing stays written; ``garrison
    check`` gives 2, its 1 meaning an invalid config). A verb that ``acts`` runs
    nothing with standard output closed (2): what it would print, such as a started
    workflow's id, would be lost."""
    stdout = sys.stdout
    if stdout is None:
        if not acts:
            return run() or 0
        print(f"garrison {group}: standard output is closed, so what the command prints "
              "would be lost; nothing was done (redirect it, to /dev/null to drop it)",
              file=sys.stderr)
        return 2
    sys.stdout = _Output(stdout)
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except (BrokenPipeError, _OutputFailed) as exc:
        _drop_output(stdout)
        if isinstance(exc, BrokenPipeError):
            return BROKEN_PIPE
        print(f"garrison {group}: cannot write the output: {exc}" + (
            " (what the command changed in the store before printing is changed)"
            if acts else ""), file=sys.stderr)
        return unwritten
    except ToolError as exc:
        print(f"garrison {group}: {exc}", file=sys.stderr)
        return exc.code
    finally:
        sys.stdout = stdout
    return code or 0
