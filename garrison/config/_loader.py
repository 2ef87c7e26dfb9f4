"""The YAML config loader (Wippy-style): files -> frozen entries, or one ``ConfigError``.

A config file looks like::

    version: "1.0"
    namespace: app
    entries:
      - {name: processes, kind: process.host}
      - {name: workflows, kind: workflow.host, store: app.db}
      - {name: handler, kind: process.py, source: "myapp.sessions:main"}
      - name: session_manager
        kind: process.service
        process: app:handler
        lifecycle: {auto_start: true, restart: {max_attempts: 10}}

Every entry gets the id ``namespace:name``. References to other entries may be
written ``ns:name`` or just ``name`` (same namespace). The loader checks the whole
file (or set of files) and reports *every* problem it finds, one line each, naming
the file, the entry, the field and what was expected, in one :class:`ConfigError`.

Structuring is done by one private cattrs converter (``_structure.py``); range
checks live in attrs validators on the frozen entry classes (``_entries.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import attrs
import yaml

from .._errors import ConfigError, NoSuchEntry, close_match, closest_id, id_hint
from .._targets import activity_refusal
from ._entries import (
    _HOST_KINDS,
    _REQUIRED,
    _RUNNABLE_KINDS,
    BUILTIN_HOSTS,
    KINDS,
    Entry,
    HostEntry,
    Lifecycle,
    ScheduleEntry,
    ServiceEntry,
    SourceEntry,
    WorkflowHostEntry,
    _is_number,
)
from ._structure import _converter, _flatten, close_field, typo_hint

SUPPORTED_VERSIONS = ("1.0", "1")
#: the kinds of entry a spawn (``node.spawn``, a ``ChildSpec``, ``--main``) may name
SPAWNABLE_KINDS = ("process.py", "workflow.py", "process.service")


# --------------------------------------------------------------------------- parsing


#: the longest problem line kept whole (a line quoting a big value is cut after it)
_LINE_MAX = 2_000
#: the most values (scalars, lists, mappings) a config file may hold once its aliases
#: are expanded: a few lines of nested aliases can stand for billions
_MAX_VALUES = 100_000


class _Problems:
    """Collects problem lines for one file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: list[str] = []

    def file(self, message: str) -> None:
        self.lines.append(f"{self.filename}: {message}")

    def entry(self, where: str, message: str, field: str | None = None) -> None:
        if field is None:
            self.lines.append(f"{self.filename}: {where}: {message}")
        else:
            self.lines.append(f"{self.filename}: {where}: field {field!r}: {message}")


def _cut(line: str) -> str:
    """``line`` whole, or its first :data:`_LINE_MAX` characters (one quoting a big
    value)."""
    if len(line) <= _LINE_MAX:
        return line
    return f"{line[:_LINE_MAX]}... (cut: {len(line):,} characters in all)"


def _too_many_values(doc: Any) -> str | None:
    """Whether ``doc`` holds more than :data:`_MAX_VALUES` values counted as if its
    aliases were copies (each list or mapping an alias shares is walked once):
    ``"values"`` if it does even with each of them counted once, ``"aliases"`` if only
    its aliases make it so, else ``None``."""
    if not _expands_past(doc):
        return None
    seen: set[int] = set()
    count, todo = 0, [doc]
    while todo and count <= _MAX_VALUES:
        value = todo.pop()
        count += 1
        if isinstance(value, dict | list) and id(value) not in seen:
            seen.add(id(value))
            todo.extend([*value.keys(), *value.values()] if isinstance(value, dict) else value)
    return "values" if count > _MAX_VALUES else "aliases"


def _expands_past(doc: Any) -> bool:
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if isinstance(value, dict):
            items: Iterable[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            return 1
        known = sizes.get(id(value))
        if known is None:
            known = 1
            for item in items:
                known += size(item)
                if known > _MAX_VALUES:
                    break
            sizes[id(value)] = known
        return known

    return size(doc) > _MAX_VALUES


@attrs.frozen
class _Located:
    entry: Entry
    filename: str
    index: int
    namespace: str
    #: the entry has problems already reported: ``entry`` is a stand-in built from its
    #: good fields (its references are still checked), never part of the config
    broken: bool = False
    #: fields the stand-in does not hold as given (their references are not checked)
    failed: frozenset[str] = frozenset()
    #: the field a service's dependencies were written in (``depends_on`` is an alias)
    requires_field: str = "lifecycle.requires"

    @property
    def where(self) -> str:
        return f"entry {self.entry.id!r} (index {self.index})"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that notes every key a mapping holds twice (``duplicates``:
    the key and where the second one is written), to refuse the file once loaded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, yaml.Mark]] = []
        #: the line (1-based) of each top-level key, to say where a problem of it is
        self.top_lines: dict[Any, int] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.top_lines = {key.value: key.start_mark.line + 1 for key, _ in node.value
                              if isinstance(key, yaml.ScalarNode)}
        return super().construct_document(node)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # an alias inside the list or mapping it names (``&e {input: [*e]}``) would make
        # a value that holds itself, endless once walked: refused at the alias
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            named = self.anchors.get(event.anchor)
            if isinstance(named, yaml.CollectionNode) and named.end_mark is None:
                what = "mapping" if isinstance(named, yaml.MappingNode) else "list"
                raise yaml.composer.ComposerError(
                    None, None, f"the alias *{event.anchor} refers to the {what} that "
                    f"contains it (&{event.anchor}, line {named.start_mark.line + 1}): a "
                    "value cannot hold itself", event.start_mark)
        return super().compose_node(parent, index)


# a number with an exponent and no dot (``1e-3``, ``2E10``) is a float, as YAML 1.2 and
# JSON say; YAML 1.1 (PyYAML's) reads it as a string, and a float input got "1e-3"
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    """A mapping, its merge keys (``<<: *anchor``, ``<<: [*a, *b]``) applied as YAML's
    merge spec says: a key written in the mapping wins over a merged one, and of the
    mappings a list merges the earlier one wins. (PyYAML 6's own merging told keys apart
    by the identity of their strings, so of two merged mappings the later one won for
    most keys; it also rewrote the nodes an alias shares.) Every key written twice is
    noted, ``<<`` too."""
    seen: set[Any] = set()
    merges: list[yaml.Node] = []
    own: list[tuple[Any, yaml.Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            key: Any = "<<"
            if merges:
                loader.duplicates.append((key, key_node.start_mark))
            merges.append(value_node)
            continue
        if key_node.tag == "tag:yaml.org,2002:value":  # (as PyYAML reads a lone '=')
            key_node.tag = "tag:yaml.org,2002:str"
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key",
                key_node.start_mark) from None
        if duplicate:
            loader.duplicates.append((key, key_node.start_mark))
        seen.add(key)
        own.append((key, value_node))
    mapping: dict[Any, Any] = {}
    for value_node in merges:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                found = "a list" if isinstance(source, yaml.SequenceNode) else "a scalar"
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"expected a mapping or list of mappings for merging, but found {found}",
                    source.start_mark)
            merged = loader.construct_object(source, deep=deep)
            if not isinstance(merged, dict):  # (a !!set, say)
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"expected a mapping for merging, but found {source.tag}",
                    source.start_mark)
            for key, value in merged.items():
                mapping.setdefault(key, value)  # (the first mapping to give a key wins)
    for key, value_node in own:
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _version_ok(value: object) -> bool:
    if isinstance(value, str):
        return value.strip() in SUPPORTED_VERSIONS
    return _is_number(value) and value == 1


#: what a name or namespace must not hold: ':' separates the namespace from the name,
#: '/' makes a string a pid (``workflows/order-17``), '@' ends a schedule's id in its
#: workflows' ids (``app:nightly@2026-01-02T03:00:00Z``) and a node name in plain pids
_NAME_RULE = "a non-empty name without ':', '/', '@', spaces or control characters"


def _name_problem(value: object, field: str) -> str:
    """What is wrong with ``value`` as the name in ``field``: the rule, and for a value
    YAML read as another type (``name: 123``, ``name: yes``), that it must be quoted."""
    text = f"expected {_NAME_RULE}, got {value!r}"
    if value is not None and not isinstance(value, str | list | dict):
        # (not its Python form as the example: YAML's yes is True, 1e3 is 1000.0)
        kind = type(value).__name__
        text += (f" (YAML read {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not a "
                 f"string: put the {field} in quotes, as written)")
    return text


def _valid_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and value.isprintable()
        and not any(c in ":/@" or c.isspace() for c in value)
    )


def _import_source(source: str) -> Callable[..., Any]:
    """Import ``module:attr.path``; raises ``_Expected``/``LookupError`` with the reason."""
    module_name, _, attr_path = source.partition(":")
    try:
        module = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # also sys.exit() at import: a problem, not our exit
        raise LookupError(
            f"module {module_name!r} could not be imported: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    parts = attr_path.split(".")
    for depth, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            # (the name it is a typo of, by the config's rule of a "did you mean")
            guess = close_match(part, [n for n in dir(obj) if not n.startswith("_")])
            hint = "" if guess is None else \
                f"; did you mean {'.'.join([*parts[:depth], guess])!r}?"
            raise LookupError(f"module {module_name!r} has no attribute {attr_path!r}"
                              f"{hint}") from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a module's __getattr__ (PEP 562) that imports more
            raise LookupError(
                f"module {module_name!r}: getting {attr_path!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
    return obj


def _is_async_callable(obj: object) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004
    return call is not None and not inspect.isroutine(obj) and inspect.iscoroutinefunction(call)


def _check_workflow_importable(func: Callable[..., Any]) -> str | None:
    """Why ``func`` cannot be found again by ``module:qualname`` (or is an activity),
    or ``None`` if it can."""
    refused = activity_refusal(func)
    if refused is not None:
        return refused
    qualname = getattr(func, "__qualname__", None)
    module = getattr(func, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str):
        return "a workflow must be a module-level function with __module__ and __qualname__"
    if "<lambda>" in qualname:
        return "a workflow cannot be a lambda: it must be importable by its module:qualname"
    if "<locals>" in qualname:
        return (
            f"a workflow cannot be a closure ({qualname!r}): "
            "it must be importable by its module:qualname"
        )
    try:
        again = _import_source(f"{module}:{qualname}")
    except LookupError as exc:
        return f"a workflow must be importable by its module:qualname {module}:{qualname}: {exc}"
    if again is not func and getattr(again, "__wrapped__", None) is not func:
        return f"{module}:{qualname} names a different object than the one loaded"
    return None


def _preprocess(kind: str, data: dict[str, Any], problems: _Problems, where: str) -> None:
    """Apply YAML aliases in place (``depends_on`` -> ``requires``)."""
    if kind != "process.service":
        return
    if data.get("host") == "":
        problems.entry(
            where, "expected a host entry id or 'processes' / 'workflows', got ''", "host"
        )
        data.pop("host")
    # An absent host means the node's built-in "processes" host, even when the
    # namespace has an entry named "processes"; "" marks it until linking.
    data.setdefault("host", "")
    lifecycle = data.get("lifecycle")
    if isinstance(lifecycle, Mapping) and "depends_on" in lifecycle:
        lifecycle = dict(lifecycle)
        if "requires" in lifecycle:
            problems.entry(
                where,
                "give either 'requires' or its alias 'depends_on', not both",
                "lifecycle.depends_on",
            )
            lifecycle.pop("depends_on")
        else:
            lifecycle["requires"] = lifecycle.pop("depends_on")
        data["lifecycle"] = lifecycle


def _requires_field(raw: object) -> str:
    """The field a service's dependencies were written in, to name in a problem with
    them: ``lifecycle.depends_on`` for the alias alone; ``lifecycle.requires`` else
    (given both, the alias is dropped with a problem of its own, see
    :func:`_preprocess`)."""
    lifecycle = raw.get("lifecycle") if isinstance(raw, Mapping) else None
    if isinstance(lifecycle, Mapping) and "depends_on" in lifecycle \
            and "requires" not in lifecycle:
        return "lifecycle.depends_on"
    return "lifecycle.requires"


#: the fields of a service's ``lifecycle:`` block (``depends_on``: the alias)
_LIFECYCLE_FIELDS = frozenset({*(f.name for f in attrs.fields(Lifecycle)), "depends_on"})


def _lifecycle_hint(field: str, raw: Mapping[str, Any], message: str) -> str:
    """``message``, the unknown-field problem of a service's ``field``, saying where a
    field of ``lifecycle:`` written beside it belongs (``lifecycle:`` left empty with
    ``auto_start:`` dedented under it reads as an empty block and an entry field)."""
    if field not in _LIFECYCLE_FIELDS:
        return message
    where = (", which is empty here: indent it under 'lifecycle:'"
             if "lifecycle" in raw and not raw["lifecycle"] else ": write it under 'lifecycle:'")
    return message.replace("unknown field;", f"unknown field (a field of 'lifecycle'{where});",
                           1)


def _missing(field: str, raw: Mapping[str, Any]) -> str:
    """``required field is missing``, naming a key of the entry that looks like a typo of
    ``field`` (``kidn: workflow.host``)."""
    typo = next((k for k in raw if isinstance(k, str) and k != field
                 and close_field(k, (field,)) == field), None)
    return "required field is missing" + (f" (is {typo!r} a typo of it?)" if typo else "")


def _parse_entry(
    raw: object, index: int, namespace: str, base_dir: Path | None, problems: _Problems,
    source_dir: Path | None = None, check_stores: bool = True,
) -> tuple[Entry, frozenset[str] | None] | None:
    """The entry and ``None``; or, for an entry with problems (reported), a stand-in
    built from its good fields and the fields it lacks (so that its references are still
    checked); or ``None`` when not even that can be built. ``check_stores``: a
    ``workflow.host``'s store file is checked as a node would open it."""
    if not isinstance(raw, Mapping):
        problems.file(
            f"entry at index {index}: expected a mapping with 'name' and 'kind', got {raw!r}"
        )
        return None
    name, kind = raw.get("name"), raw.get("kind")
    where = f"entry {namespace}:{name!s} (index {index})"
    ok = True
    if name is None:
        problems.entry(f"entry at index {index}", _missing("name", raw), "name")
        ok = False
    elif not _valid_name(name):
        problems.entry(
            f"entry at index {index}",
            _name_problem(name, "name"),
            "name",
        )
        ok = False
    else:
        where = f"entry '{namespace}:{name}' (index {index})"
    if kind is None:
        problems.entry(where, _missing("kind", raw), "kind")
        return None
    if not isinstance(kind, str) or kind not in KINDS:
        problems.entry(where, f"unknown kind {kind!r}; {typo_hint(kind, KINDS)}known kinds "
                              f"are: {', '.join(KINDS)}", "kind")
        return None
    if not ok:
        return None
    entry_id = f"{namespace}:{name}"
    cls = KINDS[kind]
    failures: list[tuple[tuple[str, ...], str]] = []
    data = {k: v for k, v in raw.items() if k not in ("name", "kind")}
    _preprocess(kind, data, problems, where)
    missing = frozenset(r for r in _REQUIRED.get(kind, ()) if r not in data)
    for required in sorted(missing):
        if _missing(required, data) == "required field is missing":
            failures.append(((required,), "required field is missing"))
        # (else a key of the entry is a typo of it: its unknown-field problem says so)
    failed: frozenset[str] | None = None  # None: the entry as given
    with attrs.validators.disabled():
        try:
            entry = _converter.structure(data, cls)
        except Exception as exc:
            failures.extend(_flatten(exc, (), cls))
            entry = getattr(exc, "partial", None)  # a stand-in (see _structure._validated)
            failed = frozenset(getattr(exc, "failed", ()))
        if entry is not None:
            entry = attrs.evolve(entry, id=entry_id, kind=kind)
    for path, message in failures:
        if path and path[-1] in ("id", "func") and len(path) == 1:
            path = ()
        if len(path) == 1 and cls is ServiceEntry and message.startswith("unknown field;"):
            message = _lifecycle_hint(path[0], raw, message)
        if path == ("lifecycle", "requires"):
            path = tuple(_requires_field(raw).split("."))
        problems.entry(where, message, ".".join(path) if path else None)
    if entry is None:
        return None
    if failures:
        failed = (failed or frozenset()) | missing
    if isinstance(entry, WorkflowHostEntry) and entry.store is not None \
            and "store" not in (failed or ()):
        try:
            if _ENV_VARIABLE.search(entry.store):  # (else a file of that name was made)
                raise ValueError(
                    f"expected a file path or a postgresql:// URL, got {entry.store!r}: a "
                    "config's values are taken as written, with no environment variable "
                    "put in (leave store out and give it as the node starts: garrison run "
                    "--store, or open_node(store=...))")
            if _HOME_FOLDER.match(entry.store):  # (a shell's ~, as $HOME: not put in)
                raise ValueError(
                    f"expected a file path or a postgresql:// URL, got {entry.store!r}: a "
                    "config's values are taken as written, with no home folder put in for "
                    "'~' (write the path in full, or leave store out and give it as the "
                    "node starts: garrison run --store ~/..., which the shell expands)")
            store = store_path(entry.store, base_dir)
            with attrs.validators.disabled():  # (validated already; a stand-in is not valid)
                entry = attrs.evolve(entry, store=store)
        except ValueError as exc:
            problems.entry(where, str(exc), "store")
            return None
        problem = store_problem(store) if check_stores else None
        if problem is not None:  # the entry's references are still checked
            problems.entry(where, problem, "store")
            failed = (failed or frozenset()) | {"store"}
    if isinstance(entry, SourceEntry) and "source" not in (failed or ()):
        loaded = _load_source(entry, where, problems, source_dir)
        if loaded is None:
            return None
        entry = loaded
    return entry, failed


#: ``${NAME}``, or ``$NAME`` opening the value or a folder of its path: a shell's
#: variable, which a config does not expand (a ``$`` inside a URL's password is none)
_ENV_VARIABLE = re.compile(r"\$\{[A-Za-z_]|(?:^|/)\$[A-Za-z_]")
#: ``~``, ``~/...`` or ``~user/...``: a shell's home folder, which a config does not
#: put in either (a file named ``~app.db`` is a file of that name)
_HOME_FOLDER = re.compile(r"~(?:[^/]*/|$)")


def store_path(store: str, base_dir: Path | None) -> str:
    """A ``workflow.host`` store as an absolute file path (relative: against the config
    file's folder), or a ``postgresql://`` URL as it is (checked for its form only: the
    server is reached when the node starts); ``ValueError`` says why it cannot be one.
    A store is a file in a folder that exists; an in-memory store is written by leaving
    ``store`` out."""
    in_memory = "leave it out for an in-memory store"
    if store.startswith(("postgresql://", "postgres://")):
        return _check_url(store)
    if not store.strip():
        raise ValueError(f"expected a file path ({in_memory}), got {store!r}")
    if store == ":memory:" or store.startswith("file:"):
        raise ValueError(f"expected a file path, not an SQLite name ({in_memory}), "
                         f"got {store!r}")
    from ..persistence._file import keyword_dsn

    dsn = keyword_dsn(store)
    if dsn is not None:
        raise ValueError(dsn)
    path = Path(store)  # (no ~ put in: a node opens the path as written, as a config has it)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    try:  # (is_dir raises, not says False, for a folder this process may not search)
        folder, in_folder = path.is_dir(), path.parent.is_dir()
    except OSError as exc:
        raise ValueError(f"cannot reach {str(path)!r}: {exc.strerror or exc}") from None
    if folder:
        raise ValueError(f"expected a file path, got the folder {str(path)!r}")
    if not in_folder:
        raise ValueError(f"expected a file in an existing folder, got {str(path)!r}: "
                         f"{str(path.parent)!r} is not a folder")
    return str(path)


def store_problem(store: str) -> str | None:
    """Why a node could not open the ``workflow.host`` store at ``store`` (an absolute
    file path, from :func:`store_path`), or ``None``; found without creating or
    locking anything (see :func:`~garrison.persistence._sqlite.check_store_file`). A
    ``postgresql://`` store is reached when the node starts, not here."""
    if store.startswith(("postgresql://", "postgres://")):
        return None
    from .._errors import StoreError, StoreVersionError
    from ..persistence._sqlite import check_store_file

    try:
        check_store_file(store)
    except (StoreError, StoreVersionError) as exc:
        return f"cannot be opened: {exc}"
    return None


def _check_url(url: str) -> str:
    """A ``postgresql://`` store URL, if its form is right (``ValueError`` otherwise)."""
    import urllib.parse

    from ..persistence._file import STRAY_AT, stray_at, url_servers

    if stray_at(url) >= 0:  # (urllib would read a piece of the password as the port)
        raise ValueError(f"expected a postgresql://user@host:port/dbname URL: {STRAY_AT}")
    try:
        parts = urllib.parse.urlsplit(url)
        url_servers(url)  # (raises ValueError for a port, of any host, that is no number)
    except ValueError as exc:
        raise ValueError(f"expected a postgresql://user@host:port/dbname URL: {exc}") from None
    if not parts.path.strip("/"):
        raise ValueError("expected a postgresql://user@host:port/dbname URL, but it names no "
                         "database")
    return url


def store_key(store: str) -> Any:
    """What two stores share when they are the same store: a resolved file, or a
    server, database and schema. (Only compared: the same-store checks of a config and
    of ``--store``, and a node's of its workflow hosts.)"""
    if store.startswith(("postgresql://", "postgres://")):
        import urllib.parse

        from ..persistence._file import url_servers

        parts = urllib.parse.urlsplit(store)
        schema = dict(urllib.parse.parse_qsl(parts.query)).get("schema", "garrison")
        # (libpq's multi-host form: one failover set of servers whatever their order,
        # which only says which libpq tries first; the database is the same)
        servers = tuple(sorted({(host or "localhost", port or 5432)
                                for host, port in url_servers(store)}))
        return ("postgresql", servers, parts.path.strip("/"), schema)
    return Path(store).resolve()


def _load_source(entry: SourceEntry, where: str, problems: _Problems,
                 source_dir: Path | None = None) -> SourceEntry | None:
    """``entry`` with its imported ``func``, or ``None`` (with the problem); its module
    is looked up in ``source_dir`` (the config file's folder) first."""
    module_name = entry.source.partition(":")[0]
    if not _source_form(entry.source):
        problems.entry(
            where,
            f"expected 'module:function' (e.g. 'myapp.jobs:main'), got {entry.source!r}",
            "source",
        )
        return None
    if source_dir is not None:
        why = _imported_elsewhere(module_name, source_dir)
        if why is not None:
            problems.entry(where, why, "source")
            return None
    try:
        with _searched_first(source_dir):
            func = _import_source(entry.source)
    except LookupError as exc:
        problems.entry(where, str(exc), "source")
        return None
    try:
        why = _source_problem(entry, func, module_name)
    except Exception as exc:  # an object whose attribute lookup raises (its __getattr__)
        why = (f"expected a function, but looking into {entry.source!r} (of type "
               f"{type(func).__name__}) raised {type(exc).__name__}: {exc}")
    if why is not None:
        problems.entry(where, why, "source")
        return None
    return attrs.evolve(entry, func=func)


def _source_problem(entry: SourceEntry, func: Any, module_name: str) -> str | None:
    """Why ``func``, imported for ``entry``, cannot be its target, or ``None``."""
    if entry.kind == "function.py":
        if not callable(func):
            return f"expected a callable (sync or async function), got {type(func).__name__}"
    elif inspect.isclass(func):  # (its __call__ may be async: an instance's, not its own)
        if entry.kind == "workflow.py":
            expected = "an async function (async def) for a workflow"
        else:
            expected = ("an async function (async def) or an object with an async "
                        "__call__ for a process")
        hint = ""
        if entry.kind != "workflow.py" and _is_async_callable(func):
            name = func.__name__
            hint = (f"; name an instance, not the class: a module-level "
                    f"`{name.lower()} = {name}()` and source '{module_name}:{name.lower()}'")
        return f"expected {expected}, got the class {entry.source!r}{hint}"
    elif not _is_async_callable(func):
        what = "workflow" if entry.kind == "workflow.py" else "process"
        return (f"expected an async function (async def) for a {what}, "
                f"got {_describe(func)} {entry.source!r}")
    if entry.kind == "workflow.py" and getattr(func, "__garrison_activity__", None) is not None:
        return (f"expected a workflow function, but {entry.source!r} is an @activity (a "
                "workflow calls it; an activity entry is kind function.py)")
    if entry.kind == "workflow.py":
        return _check_workflow_importable(func)
    return None


@contextlib.contextmanager
def _searched_first(folder: Path | None) -> Iterator[None]:
    """Imports made inside look in ``folder`` (a config file's) before the rest of
    ``sys.path`` (where every config folder loaded stays, the last one first)."""
    if folder is None:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))  # (the first one: ours, unless moved)


def _imported_elsewhere(module_name: str, folder: Path) -> str | None:
    """Why module ``module_name`` (dotted), which ``folder`` holds, cannot be the one a
    source names: it, or a package above it, is imported already from another file
    whose code differs (another config's folder, the application's own, the standard
    library); else ``None``. Python keeps one module per name, and a workflow is found
    again by its ``module:function`` name (also after a restart), so the two cannot
    both be right: the other would run in silence. A byte-identical copy (a folder
    copied per test, say) is the same code: the module imported already is used."""
    parts = module_name.split(".")
    for depth, (name, spec) in enumerate(module_specs(module_name, folder), 1):
        mine = spec.origin if spec.origin and os.path.isfile(spec.origin) else None
        loaded = sys.modules.get(name)
        if loaded is None:
            if depth == 1:
                return None  # imported from the folder (searched first)
            # found through the package imported already, wherever that one is
            parent = ".".join(parts[:depth - 1])
            parent_path = getattr(sys.modules.get(parent), "__path__", None)
            try:
                found = (importlib.machinery.PathFinder.find_spec(name, list(parent_path))
                         if parent_path is not None else None)
            except (ImportError, ValueError):
                found = None
            theirs = found.origin if found is not None and found.origin else None
            if mine is None or (theirs and same_code(mine, theirs)):
                return None  # from here on, the package's own folder decides
            held = f"the package {parent!r} imported already ({_origin(parent)})"
            where = (f"{held} would import it from {theirs!r}" if theirs else
                     f"{held} has no such module")
            return _clash(name, mine, where)
        theirs = getattr(loaded, "__file__", None)
        if mine is None:
            pass  # a namespace package here: what it holds is checked below
        elif not theirs or not same_code(mine, theirs):
            return _clash(name, mine, f"a module named {name!r} is already imported "
                                      f"{_origin(name)}")
    return None  # (not in the folder, or a module, not a package, above: found as before)


def module_specs(module_name: str, folder: Path) -> Iterator[tuple[str, ModuleSpec]]:
    """``(name, spec)`` of each part of the dotted ``module_name`` that ``folder`` holds,
    outermost first (``app``, then ``app.flows``), as far as it holds them: it stops at
    a part it does not hold, or one below a module that is no package."""
    parts = module_name.split(".")
    search: list[str] | None = [str(folder)]  # where the folder's copy of the next part is
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if search is None:
            return
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        except (ImportError, ValueError):
            return
        if spec is None:
            return
        yield name, spec
        search = spec.submodule_search_locations


def module_file(module_name: str, folder: Path) -> str | None:
    """The file of the dotted ``module_name`` that ``folder`` holds (a package's
    ``__init__.py``), or ``None``."""
    specs = list(module_specs(module_name, folder))
    if len(specs) != module_name.count(".") + 1:
        return None
    origin = specs[-1][1].origin
    return origin if origin and os.path.isfile(origin) else None


def _origin(name: str) -> str:
    """Where the imported module ``name`` came from, for a message."""
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file:
        return f"from {file!r}"
    paths = list(getattr(module, "__path__", None) or [])
    if paths:
        return f"as a namespace package (no __init__.py) from {', '.join(map(repr, paths))}"
    return "as a module with no file (built in, or made in code)"


def same_code(mine: str, theirs: str) -> bool:
    """``mine`` and ``theirs`` are one file, or two with the same bytes."""
    try:
        if os.path.samefile(mine, theirs):
            return True
        if os.path.getsize(mine) != os.path.getsize(theirs):
            return False
        with open(mine, "rb") as a, open(theirs, "rb") as b:
            return a.read() == b.read()
    except OSError:
        return False  # (the other file gone or unreadable: not known to be the same)


def _clash(name: str, mine: str, where: str) -> str:
    return (f"module {name!r} is {mine!r} (in the config file's folder), but {where}: "
            "Python holds one module per name (and a workflow is found again by its "
            "module:function name), so one of them would run in place of the other; give "
            "the modules distinct names or put each in a package of a distinct name")


def _describe(obj: object) -> str:
    if inspect.isasyncgenfunction(obj):
        return "the async generator function (async def with yield)"
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return "the plain (sync) function"
    return f"a {type(obj).__name__}"


@attrs.frozen
class _ParsedFile:
    filename: str
    namespace: str | None
    entries: list[_Located]
    problems: list[str]
    named_ids: list[tuple[str, int]] = attrs.Factory(list)


#: the namespace entry ids are shown with in a file whose namespace is missing or bad
_NO_NAMESPACE = "(namespace?)"


def _parse_text(text: str, filename: str, base_dir: Path | None,
                source_dir: Path | None = None, check_stores: bool = True) -> _ParsedFile:
    problems = _Problems(filename)

    def done(namespace: str | None = None, entries: list[_Located] | None = None) -> _ParsedFile:
        return _ParsedFile(filename, namespace, entries or [], problems.lines)

    loader = _UniqueKeyLoader(text)  # a SafeLoader subclass
    try:
        doc = loader.get_single_data()
        too_many = _too_many_values(doc)
    except RecursionError:
        problems.file("values nested too deeply (lists or mappings hundreds of levels deep)")
        return done()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is not None:
            problems.file(
                f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
            )
        else:
            problems.file(f"YAML syntax error: {problem}")
        return done()
    finally:
        loader.dispose()
    if loader.duplicates:  # each of them, in the file's order
        for key, mark in sorted(loader.duplicates, key=lambda d: d[1].index):
            problems.file(f"YAML syntax error at line {mark.line + 1}, column "
                          f"{mark.column + 1}: duplicate key {key!r}")
        return done()
    if too_many == "values":
        problems.file(f"it holds more than {_MAX_VALUES:,} values (lists, mappings and the "
                      "values in them): not loaded")
        return done()
    if too_many:
        problems.file(f"its aliases (*name) expand to more than {_MAX_VALUES:,} values: "
                      "not loaded (an alias of an alias of ... repeats what it names)")
        return done()
    if not isinstance(doc, Mapping):
        problems.file(
            "expected a mapping with 'version', 'namespace' and 'entries' at the top level, "
            f"got {type(doc).__name__ if doc is not None else 'an empty document'}"
        )
        return done()
    allowed_top = ("version", "namespace", "entries", "meta")
    for key in doc:
        if key not in allowed_top:
            problems.file(
                f"unknown top-level field {key!r}; {typo_hint(key, allowed_top)}allowed "
                f"fields are: {', '.join(allowed_top)}"
            )
    meta = doc.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        problems.file(f"field 'meta': expected a mapping, got {meta!r}")
    version = doc.get("version")
    if version is None:
        problems.file("field 'version': required field is missing (expected \"1.0\")")
    elif not _version_ok(version):
        problems.file(
            f"field 'version': expected one of {', '.join(map(repr, SUPPORTED_VERSIONS))}, "
            f"got {version!r}"
        )
    namespace = doc.get("namespace")
    if namespace is None:
        problems.file("field 'namespace': required field is missing")
        namespace = None
    elif not _valid_name(namespace):
        problems.file(
            f"field 'namespace': {_name_problem(namespace, 'namespace')}"
        )
        namespace = None
    if "entries" not in doc and all(key in allowed_top for key in doc):
        # (an unknown field, a typo of 'entries' say, is the one problem)
        problems.file("field 'entries': required field is missing (a config with none "
                      "says `entries: []`)")
    raw_entries = doc.get("entries", [])
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        line = loader.top_lines.get("entries")
        hint = ""
        if isinstance(raw_entries, Mapping) and raw_entries:
            first = next(iter(raw_entries))
            hint = (" (a mapping: write each entry as an item of a list, "
                    f"'- {{name: {first}, kind: ...}}')")
        problems.file(f"field 'entries'{f' (line {line})' if line else ''}: expected a list "
                      f"of entries, got {raw_entries!r}{hint}")
        return done(namespace)
    if namespace is None:
        # the entries' own problems are reported all the same (under a stand-in
        # namespace: their ids say it is missing); nothing of the file is loaded
        for index, raw in enumerate(raw_entries):
            _parse_entry(raw, index, _NO_NAMESPACE, base_dir, problems, source_dir,
                         check_stores)
        return done(namespace)
    located: list[_Located] = []
    named_ids: list[tuple[str, int]] = []
    for index, raw in enumerate(raw_entries):
        if isinstance(raw, Mapping) and _valid_name(raw.get("name")):
            named_ids.append((f"{namespace}:{raw['name']}", index))
        parsed = _parse_entry(raw, index, namespace, base_dir, problems, source_dir,
                              check_stores)
        if parsed is not None:
            entry, failed = parsed
            located.append(_Located(entry, filename, index, namespace,
                                    broken=failed is not None, failed=failed or frozenset(),
                                    requires_field=_requires_field(raw)))
    return _ParsedFile(filename, namespace, located, problems.lines, named_ids)


# --------------------------------------------------------------------------- linking


def _link(parsed: Sequence[_ParsedFile], node_store: bool = True,
          ) -> tuple[dict[str, Entry], list[str]]:
    """Join parsed files, resolve references, check kinds and dependency cycles; without a
    ``node_store`` (the node's own ``workflows`` host in memory), also the schedules
    that would run there (see :func:`_unkept_schedules`)."""
    problems: list[str] = [line for p in parsed for line in p.problems]
    first_seen: dict[str, tuple[str, int]] = {}
    for p in parsed:
        for entry_id, index in p.named_ids:
            if entry_id in first_seen:
                first_file, first_index = first_seen[entry_id]
                problems.append(
                    f"{p.filename}: entry {entry_id!r} (index {index}): field 'name': "
                    f"duplicate entry id {entry_id!r} (first defined in {first_file} "
                    f"at index {first_index}); expected a unique name"
                )
            else:
                first_seen[entry_id] = (p.filename, index)
    located: dict[str, _Located] = {}
    for p in parsed:
        for loc in p.entries:
            if first_seen.get(loc.entry.id) == (loc.filename, loc.index):
                located[loc.entry.id] = loc
    namespaces = frozenset(p.namespace for p in parsed if p.namespace)
    # Entries that failed to parse still exist as ids, so a reference to them is not
    # reported a second time as unknown.
    attempted: set[str] = set(first_seen)

    def resolve(ref: str, loc: _Located) -> str:
        return ref if ":" in ref else f"{loc.namespace}:{ref}"

    entries: dict[str, Entry] = {}
    # every service's resolved requirements, its other fields right or not: a cycle is
    # reported in the same pass as an entry's other problems
    requirements: dict[str, list[str]] = {}
    for entry_id, loc in located.items():
        entry = loc.entry
        if isinstance(entry, ServiceEntry):
            bad = False

            def report(field: str, message: str, loc: _Located = loc) -> None:
                problems.append(f"{loc.filename}: {loc.where}: field {field!r}: {message}")

            process = resolve(entry.process, loc)
            target = located.get(process)
            if "process" in loc.failed:
                bad = True
            elif target is None:
                if process not in attempted:
                    report("process", _unknown_entry(
                        process, "a process.py or workflow.py entry", located, _RUNNABLE_KINDS,
                        "process", loc, namespaces))
                bad = True
            elif target.entry.kind not in _RUNNABLE_KINDS:
                report(
                    "process",
                    f"expected a process.py or workflow.py entry, but "
                    f"{process!r} is a {target.entry.kind}",
                )
                bad = True
            # Not given: the node's built-in host. A bare name is looked up in the
            # entry's namespace first, then among the built-in host names.
            host = entry.host or "processes"
            local_first = ":" in host or host not in BUILTIN_HOSTS
            if "host" in loc.failed:
                bad = True
            elif entry.host and (local_first or f"{loc.namespace}:{host}" in attempted):
                host = resolve(host, loc)
                host_loc = located.get(host)
                if host_loc is None:
                    if host not in attempted:
                        report(
                            "host",
                            f"unknown host {host!r} (expected a process.host or "
                            f"workflow.host entry, or one of {', '.join(BUILTIN_HOSTS)})",
                        )
                    bad = True
                elif host_loc.entry.kind not in _HOST_KINDS:
                    report(
                        "host",
                        f"expected a process.host or workflow.host entry, but "
                        f"{host!r} is a {host_loc.entry.kind}",
                    )
                    bad = True
            if not bad and target is not None:
                # both known: a process.py runs on a process host, a workflow.py on a
                # workflow host (on the other kind of host neither runs as it is meant to)
                host_kind = (located[host].entry.kind if host in located
                             else "workflow.host" if host == "workflows" else "process.host")
                wanted = "workflow.host" if target.entry.kind == "workflow.py" else "process.host"
                if host_kind != wanted:
                    report("host", _host_mismatch(target.entry.kind, process, host, entry.host,
                                                  wanted))
                    bad = True
            req_field = loc.requires_field
            requires: list[str] = []
            written: dict[str, str] = {}  # each service required: as it was written
            wrong: set[str] = set()  # ... and those already reported as no service
            for ref in () if "lifecycle" in loc.failed else entry.lifecycle.requires:
                dep = resolve(ref, loc)
                dep_loc = located.get(dep)
                if dep in written:  # (a slip: most likely another service was meant)
                    # A name already reported (unknown, or no service) is one mistake,
                    # one line: `[nope, nope]` is not also "named twice".
                    if dep not in wrong:
                        both = (f" (as {written[dep]!r} and as {ref!r})"
                                if written[dep] != ref else "")
                        report(req_field, f"expected each service once, but {dep!r} is "
                                          f"named twice{both}")
                    bad = True
                    continue
                written[dep] = ref
                if dep_loc is None:
                    if dep not in attempted:
                        report(req_field, _unknown_entry(dep, "a process.service", located,
                                                         ("process.service",)))
                        wrong.add(dep)
                    bad = True
                elif dep_loc.entry.kind != "process.service":
                    report(
                        req_field,
                        f"expected a process.service entry, but {dep!r} is a {dep_loc.entry.kind}",
                    )
                    wrong.add(dep)
                    bad = True
                else:
                    requires.append(dep)
            requirements[entry_id] = requires
            if not bad and "input" not in loc.failed and target is not None \
                    and isinstance(target.entry, SourceEntry) \
                    and target.entry.func is not None:
                # as a schedule's: an input that cannot start the process is a config
                # error, not a service that crashes and restarts at every start
                durable = host == "workflows" or (
                    host in located and located[host].entry.kind == "workflow.host")
                why = _input_problem(target.entry.func, entry.input, process,
                                     restore=durable)
                if why is not None:
                    report("input", why)
                    bad = True
            if bad or loc.broken:
                continue
            entry = attrs.evolve(
                entry,
                process=process,
                host=host,
                lifecycle=attrs.evolve(entry.lifecycle, requires=tuple(requires)),
            )
        elif isinstance(entry, ScheduleEntry):
            linked = _link_schedule(entry, loc, located, attempted, problems, namespaces)
            if linked is None:
                continue
            entry = linked
        if loc.broken:
            continue
        entries[entry_id] = entry
    if not node_store:
        problems.extend(_unkept_schedules(located, entries))
    stores: dict[Any, str] = {}
    for entry_id, loc in located.items():  # (broken ones too: their other problems aside)
        entry = loc.entry
        if isinstance(entry, WorkflowHostEntry) and entry.store is not None \
                and "store" not in loc.failed:
            key = store_key(entry.store)
            shown = str(key) if isinstance(key, Path) else entry.store
            if key in stores:
                problems.append(
                    f"{loc.filename}: {loc.where}: field 'store': expected a store of its own, "
                    f"but {shown!r} is also the store of entry {stores[key]!r}"
                )
            else:
                stores[key] = entry_id
    for cycle in _find_cycles(requirements):
        loc = located[cycle[0]]
        problems.append(
            f"{loc.filename}: {loc.where}: field {loc.requires_field!r}: dependency cycle "
            + " -> ".join(cycle)
        )
    return entries, problems


def _unkept_schedules(located: Mapping[str, _Located],
                      entries: Mapping[str, Entry]) -> list[str]:
    """The problem of each schedule that would run on the node's own ``workflows`` host
    beside two or more ``workflow.host`` entries (with one, ``workflows`` is that one),
    when the node is given no store: that host's store is in memory, so the schedule
    would be in none of the config's stores and lost at the next start. The node
    refuses it as it starts (``Node._check_schedules_kept``, which also knows a store
    object given to it); ``garrison check`` and ``garrison run`` without ``--store``
    say it here, naming the entry."""
    hosts = sorted(i for i, loc in located.items() if loc.entry.kind == "workflow.host")
    if len(hosts) < 2:
        return []
    return [
        f"{loc.filename}: {loc.where}: field 'host': expected one of the config's workflow "
        f"hosts ({', '.join(hosts)}): on the node's own host 'workflows' the schedule would "
        "be kept in memory, as the node is given no store (lost at the next start, and in "
        "none of the config's stores); or give the node a store (garrison run --store, "
        "open_node(store=...))"
        for entry_id, loc in located.items()
        if isinstance(entry := entries.get(entry_id), ScheduleEntry)
        and entry.host == "workflows"
    ]


def _unknown_entry(ref: str, expected: str, located: Mapping[str, _Located],
                   kinds: Sequence[str], field: str = "", loc: _Located | None = None,
                   namespaces: frozenset[str] = frozenset()) -> str:
    """``unknown entry 'app:handlr' (expected ...)`` for a reference ``ref`` to no entry,
    with the id of an entry of ``kinds`` it is most likely a typo of. Given the
    ``field`` (of the entry at ``loc``) that names a ``*.py`` entry, a ``ref`` that
    reads as a ``module:function`` of no namespace of the config (``process:
    "myapp.sessions:main"``, the source written where the entry goes) says how to
    make that entry, or which entry has that source."""
    text = f"unknown entry {ref!r} (expected {expected})"
    near = closest_id(ref, [i for i, other in located.items() if other.entry.kind in kinds])
    if near is not None:
        return f"{text}; did you mean {near!r}?"
    namespace, _, function = ref.rpartition(":")
    if not field or loc is None or namespace in namespaces or not _source_form(ref) \
            or not _importable(namespace.partition(".")[0]):
        return text  # (an entry of a config file not loaded, say: no module of its name)
    takes = f"{field!r} takes an entry id, namespace:name"
    for entry_id, other in located.items():
        if other.entry.kind in kinds and getattr(other.entry, "source", None) == ref:
            return f"{text}; did you mean {entry_id!r}? (its source is {ref!r}: {takes})"
    kind = kinds[0]
    name = function.rpartition(".")[2]
    return (f"{text}: {takes}, and this config has no namespace {namespace!r}; to run the "
            f"function {ref!r}, add an entry {{name: {name}, kind: {kind}, source: "
            f"\"{ref}\"}} and write {field}: {loc.namespace}:{name}")


def _importable(module: str) -> bool:
    """Whether the top-level module ``module`` can be found (on ``sys.path``, where each
    config's folder is), without importing anything."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _source_form(text: str) -> bool:
    """Whether ``text`` has the form of a ``source:``, ``module:function`` (dotted
    names)."""
    module_name, sep, attr_path = text.partition(":")
    return bool(sep) and all(p.isidentifier() for p in module_name.split(".")) and all(
        p.isidentifier() for p in attr_path.split("."))


def _host_mismatch(kind: str, process: str, host: str, given: str, wanted: str) -> str:
    """Why a service cannot run its ``process`` (an entry of ``kind``) on ``host``."""
    shown = f"{host!r}" + ("" if given else " (the default when 'host' is left out)")
    if wanted == "workflow.host":
        return (f"expected a workflow host (workflows or a workflow.host entry) for the "
                f"workflow.py entry {process!r}, got the process host {shown}")
    return (f"expected a process host (processes or a process.host entry) for the {kind} "
            f"entry {process!r}, got the workflow host {shown}; to run as a durable "
            "workflow, make it a workflow.py entry")


def _link_schedule(entry: ScheduleEntry, loc: _Located, located: Mapping[str, _Located],
                   attempted: set[str], problems: list[str],
                   namespaces: frozenset[str] = frozenset()) -> ScheduleEntry | None:
    """A schedule's ``workflow`` (a workflow.py entry) and ``host`` (a workflow.host entry
    or ``workflows``) as full ids; ``None`` (with the problems) if one is wrong
    (``namespaces``: the config's, see :func:`_unknown_entry`)."""

    def report(field: str, message: str) -> None:
        problems.append(f"{loc.filename}: {loc.where}: field {field!r}: {message}")

    def resolve(ref: str) -> str:
        return ref if ":" in ref else f"{loc.namespace}:{ref}"

    from ..hosts.workflow._schedules import check_schedule_id

    ok = True
    try:
        check_schedule_id(entry.id)  # as node.schedule checks it
    except ValueError as exc:
        report("name", str(exc))
        ok = False
    workflow = resolve(entry.workflow)
    target = located.get(workflow)
    if "workflow" in loc.failed:
        ok = False
    elif target is None:
        if workflow not in attempted:
            report("workflow", _unknown_entry(workflow, "a workflow.py entry", located,
                                              ("workflow.py",), "workflow", loc, namespaces))
        ok = False
    elif target.entry.kind != "workflow.py":
        report("workflow", f"expected a workflow.py entry, but {workflow!r} is a "
               f"{target.entry.kind}")
        ok = False
    elif "input" not in loc.failed and isinstance(target.entry, SourceEntry) \
            and target.entry.func is not None:
        why = _input_problem(target.entry.func, entry.input, workflow)
        if why is not None:
            report("input", why)
            ok = False
    host = entry.host
    if "host" in loc.failed:
        ok = False
    elif host != "workflows" or f"{loc.namespace}:workflows" in attempted:
        host = resolve(host)
        host_loc = located.get(host)
        if host_loc is None:
            if host not in attempted:
                report("host", f"unknown host {host!r} (expected a workflow.host entry, or "
                       "workflows)")
            ok = False
        elif host_loc.entry.kind != "workflow.host":
            report("host", f"expected a workflow.host entry, but {host!r} is a "
                   f"{host_loc.entry.kind}")
            ok = False
    if not ok or loc.broken:
        return None
    return attrs.evolve(entry, workflow=workflow, host=host)


def _input_problem(func: Callable[..., Any], args: tuple[Any, ...], target: str, *,
                   restore: bool = True) -> str | None:
    """Why ``func(*args)`` cannot start (``args``: a schedule's or a service's ``input``),
    or ``None``: too many or too few arguments for its signature, or (``restore``: it
    runs on a workflow host, which stores its input) a value the store cannot hold as
    JSON (a date, bytes, a set, a mapping with keys that are not strings), or one whose
    JSON form cannot become its parameter's annotated type (as the workflow's arguments
    are stored, then restored from the store when it runs, and as ``garrison workflows
    start`` checks them)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # no signature to check against
        return None
    try:  # shown with its annotations as written (not as strings)
        signature = inspect.signature(func, eval_str=True)
    except Exception:  # an annotation that does not evaluate: shown as text
        pass
    shown = f"{list(args)!r}"
    try:
        signature.bind(*args)
    except TypeError as exc:
        hint = ""
        if len(args) > 1 and _input_problem(func, (list(args),), target) is None:
            # (one list argument written bare: README's `input: [[1, 2]]`)
            hint = (f" (to give {shown} as its one argument, write input: "
                    f"[{shown}])")
        return (f"the input {shown} does not fit {target} {signature}: {exc}; expected a "
                f"list of its positional arguments{hint}")
    if not restore:  # a plain process gets the values as they are (never stored)
        return None
    import json

    from .._errors import GarrisonError, PayloadError
    from .._targets import target_name
    from ..hosts.workflow._codec import arguments_json, restore_args

    try:  # stored as JSON, then read back as the workflow runs (and after a restart)
        plain = json.loads(arguments_json(func, args, f"the input {shown} for {target}"))
    except PayloadError as exc:
        return f"{exc}{_yaml_date_hint(args)}"
    try:
        restore_args(func, plain, f"workflow {target_name(func)}")
    except (GarrisonError, TypeError, ValueError) as exc:
        return f"the input {shown} does not fit {target} {signature}: {exc}"
    return None


def _yaml_date_hint(value: object) -> str:
    """A hint for an input holding a date: YAML reads an unquoted ``2024-01-01`` as a
    date, which no store holds (a time, with its zone or without, it holds)."""
    import datetime

    def dated(v: object) -> bool:
        if isinstance(v, datetime.datetime):
            return False
        if isinstance(v, datetime.date):
            return True
        if isinstance(v, Mapping):
            return any(dated(k) or dated(x) for k, x in v.items())
        if isinstance(v, list | tuple | set | frozenset):
            return any(dated(x) for x in v)
        return False

    if not dated(value):
        return ""
    return ("; YAML reads an unquoted date as a date: quote it ('2024-01-01') to pass a "
            "string, or give a time with its zone (2024-01-01T00:00:00Z)")


def _find_cycles(requirements: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every distinct dependency cycle (as a closed path ``a, b, a``) among services (id ->
    the ids it requires), in file order.

    A depth-first walk with a stack of its own (not recursion): a chain of thousands of
    services, each requiring the one before, is a config like any other."""
    cycles: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []  # the services being visited, outermost first
    todo: list[Iterator[str]] = []  # for each of them, its requirements not yet looked at

    for root in requirements:
        if root in state:
            continue
        state[root] = 1
        path.append(root)
        todo.append(iter(requirements[root]))
        while todo:
            dep = next(todo[-1], None)
            if dep is None:  # every requirement of the innermost one seen: it is done
                todo.pop()
                state[path.pop()] = 2
            elif dep not in requirements:
                continue
            elif state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                key = frozenset(cycle)
                if key not in seen_sets:
                    seen_sets.add(key)
                    cycles.append(cycle)
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                todo.append(iter(requirements[dep]))
    return cycles


# --------------------------------------------------------------------------- public functions


@attrs.frozen
class Config:
    """A loaded, checked config: entries by id, in file order.

    Build it with :func:`load_config`, :func:`load_configs` or
    :func:`load_config_text`; every reference inside is a full entry id.
    """

    entries: Mapping[str, Entry]
    source_paths: tuple[Path, ...] = ()
    #: the namespaces of the files loaded (also one whose file has no entries); by
    #: default those of the entries. A node reconciles the config schedules of these
    #: namespaces only (see ``Scheduler._sync_config``).
    namespaces: frozenset[str] = attrs.field(
        default=attrs.Factory(lambda self: frozenset(
            entry_id.partition(":")[0] for entry_id in self.entries), takes_self=True))

    @property
    def source_path(self) -> Path | None:
        """The file this config was loaded from (the first one, if merged)."""
        return self.source_paths[0] if self.source_paths else None

    def __getitem__(self, entry_id: str) -> Entry:
        return self.entries[entry_id]

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.entries

    def get(self, entry_id: str) -> Entry | None:
        """The entry with this id, or ``None``."""
        return self.entries.get(entry_id)

    def hosts(self) -> list[HostEntry | WorkflowHostEntry]:
        """The ``process.host`` and ``workflow.host`` entries, in file order."""
        return [e for e in self.entries.values() if isinstance(e, HostEntry | WorkflowHostEntry)]

    def sources(self, kind: str | None = None) -> list[SourceEntry]:
        """The ``*.py`` entries (optionally only one kind), in file order."""
        return [
            e
            for e in self.entries.values()
            if isinstance(e, SourceEntry) and (kind is None or e.kind == kind)
        ]

    def schedules(self) -> list[ScheduleEntry]:
        """The ``workflow.schedule`` entries, in file order."""
        return [e for e in self.entries.values() if isinstance(e, ScheduleEntry)]

    def services(self) -> list[ServiceEntry]:
        """The ``process.service`` entries in dependency order.

        Every service comes after the services it requires; otherwise file order
        is kept. Stop them in the reverse of this order.
        """
        services = {k: e for k, e in self.entries.items() if isinstance(e, ServiceEntry)}
        return _dependency_order(services)

    def resolve_target(self, entry_id: str) -> Callable[..., Any]:
        """The imported callable of a ``*.py`` entry (or of a service's process).

        Raises :class:`~garrison.NoSuchEntry` (a ``KeyError``) if no entry has the id,
        ``KeyError`` naming the kind of one that runs nothing (a host).
        """
        entry = self.entries.get(entry_id)
        if isinstance(entry, ServiceEntry):
            entry = self.entries.get(entry.process)
        if isinstance(entry, SourceEntry) and entry.func is not None:
            return entry.func
        if entry is None:
            raise self.no_entry(entry_id)
        raise KeyError(f"config entry {entry_id!r} is a {entry.kind}, not a runnable target")

    def no_entry(self, entry_id: str, kinds: Sequence[str] = SPAWNABLE_KINDS) -> NoSuchEntry:
        """The error for ``entry_id``, which names no entry, given where an entry of one
        of ``kinds`` goes: with the id of such an entry it most likely meant (a typo,
        or a name without its namespace), else those entries listed."""
        ids = [e.id for e in self.entries.values() if e.kind in kinds]
        detail = id_hint(entry_id, ids)
        if not detail:
            shown = ", ".join(ids[:12]) + (", ..." if len(ids) > 12 else "") if ids else "none"
            expected = ", ".join(kinds[:-1]) + f" or {kinds[-1]}" if len(kinds) > 1 \
                else kinds[0]
            detail = f"; expected the id of a {expected} entry: {shown}"
        return NoSuchEntry(entry_id, detail)

    @classmethod
    def check(cls, *paths: str | os.PathLike[str]) -> list[str]:
        """The problems of the given config files (empty when they are valid)."""
        return check_config(*paths)


def _dependency_order(services: Mapping[str, ServiceEntry]) -> list[ServiceEntry]:
    """``services`` with each one after the services it requires, otherwise in their
    order (a depth-first walk with a stack of its own: a chain may be thousands long)."""
    order: list[ServiceEntry] = []
    done: set[str] = set()
    for root in services:
        if root in done:
            continue
        done.add(root)
        path = [root]
        todo = [iter(services[root].lifecycle.requires)]
        while todo:
            dep = next(todo[-1], None)
            if dep is None:  # what it requires is placed: it comes next
                todo.pop()
                order.append(services[path.pop()])
            elif dep in services and dep not in done:
                done.add(dep)
                path.append(dep)
                todo.append(iter(services[dep].lifecycle.requires))
    return order


#: the largest config file read (bytes): one that never ends (``/dev/zero``) stops there
_MAX_FILE = 16 << 20


def _read(path: str | os.PathLike[str]) -> tuple[str | None, str]:
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as file:
            data = file.read(_MAX_FILE + 1)
        if len(data) > _MAX_FILE:
            return None, (f"{filename}: cannot read the file: larger than "
                          f"{_MAX_FILE >> 20} MiB, which no config is")
        return data.decode("utf-8"), filename
    except FileNotFoundError:
        return None, f"{filename}: file not found"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{filename}: cannot read the file: {type(exc).__name__}: {exc}"


def _parse_all(
    sources: Iterable[tuple[str, str, Path | None, Path | None]], node_store: bool = True,
    check_stores: bool = True,
) -> tuple[dict[str, Entry], list[str], frozenset[str]]:
    """The linked entries, the problems, and the namespaces of the files (each given as
    its text, name, folder for relative stores, folder searched first for sources)."""
    parsed = [_parse_text(text, filename, base_dir, source_dir, check_stores)
              for text, filename, base_dir, source_dir in sources]
    entries, problems = _link(parsed, node_store)
    return entries, [_cut(p) for p in problems], frozenset(
        p.namespace for p in parsed if p.namespace)


def load_configs(paths: Iterable[str | os.PathLike[str]]) -> Config:
    """Load and merge several config files (each with its own ``namespace``).

    References may cross files; entry ids must be unique across all of them.
    Raises :class:`ConfigError` listing every problem of every file.
    """
    return load_for_node(paths, node_store=True)


def load_for_node(paths: Iterable[str | os.PathLike[str]], *, node_store: bool,
                  check_stores: bool = True) -> Config:
    """:func:`load_configs`, for a node given a store for its own ``workflows`` host
    (``node_store``) or none: without one, a config schedule that would run on that
    host, in memory, is a problem too (see :func:`_unkept_schedules`).
    ``check_stores=False``: the ``workflow.host`` stores' files are not checked as a
    node would open them (see :func:`load_for_tool`)."""
    if isinstance(paths, str | os.PathLike):  # (one path: its characters, each a file)
        raise TypeError(f"load_configs({paths!r}): expected a list of config paths; for "
                        "one file, load_config(path)")
    paths = list(paths)
    sources: list[tuple[str, str, Path | None, Path | None]] = []
    problems: list[str] = []
    for path in paths:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"a config path must be a str or os.PathLike, got "
                            f"{type(path).__name__} {path!r:.80} (several files: "
                            "load_configs([a, b]) or check_config(a, b))")
        text, filename = _read(path)
        if text is None:
            problems.append(filename)
            continue
        base = Path(filename).resolve().parent
        # `source: "module:function"` is looked up next to its config file first (see
        # _load_source); the folder stays on sys.path for what its modules import later
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        sources.append((text, filename, base, base))
    entries, more, namespaces = _parse_all(sources, node_store, check_stores)
    problems.extend(more)
    if problems:
        raise ConfigError(problems)
    return Config(entries, tuple(Path(os.fspath(p)) for p in paths), namespaces)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load one config file; raises :class:`ConfigError` listing every problem found.

    Importing the ``source:`` modules happens here, so a missing module or a
    non-async process function is reported at load time.
    """
    return load_configs([path])


def load_for_tool(path: str | os.PathLike[str]) -> Config:
    """:func:`load_config`, for a tool given ``--config`` (``garrison workflows``,
    ``schedules``, ``nodes``): its workflow hosts' store files are not checked as a
    node would open them (to write). The tool opens the store itself, and says what
    is wrong with one it cannot use; one it only reads may be a file no node could
    write (a backup on a read-only mount), as with ``--store``."""
    return load_for_node([path], node_store=True, check_stores=False)


def load_config_text(text: str, filename: str = "<string>") -> Config:
    """Load a config from YAML text; ``filename`` is used in messages.

    Relative ``workflow.host`` store paths are made absolute against the current
    directory.
    """
    entries, problems, namespaces = _parse_all([(text, filename, Path.cwd(), None)])
    if problems:
        raise ConfigError(problems)
    return Config(entries, (), namespaces)


def check_config(*paths: str | os.PathLike[str]) -> list[str]:
    """The problems of the given config files, one line each (empty when valid).

    This is what ``garrison check CONFIG`` prints: a config as ``garrison run CONFIG``
    runs it, with no ``--store`` (a schedule left on the node's own in-memory host is a
    problem, see :func:`_unkept_schedules`).
    """
    try:
        load_for_node(paths, node_store=False)
    except ConfigError as exc:
        return list(exc.problems)
    return []
