"""Targets: checking, naming and importing the callables processes and workflows run.

A process target is an async function (or an object with an async ``__call__``). A
workflow target must also be importable by its ``module:qualname``, because a restarted
node finds it again by that name.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["activity_refusal", "check_entry", "check_target", "entry_refusal",
           "exit_is_import_error", "function_gone", "import_target", "is_script",
           "main_function_module", "main_module_name", "script_spec", "target_name",
           "workflow_refusal", "workflow_refused_now"]

#: how many targets each cache below remembers (targets are few; this bounds odd uses)
_CACHE_SIZE = 4096
#: workflow targets by function: module-level functions, alive anyway
_names: dict[Any, str] = {}


def target_name(fn: Any) -> str:
    """``module:qualname`` of a workflow function, or ``TypeError`` saying why it has none
    (an ``@activity`` is refused: it runs inside a workflow, never as one)."""
    try:
        return _names[fn]
    except (KeyError, TypeError):
        pass
    name = _target_name(fn)  # only importable module-level functions get here
    if len(_names) < _CACHE_SIZE:
        _names[fn] = name
    return name


#: which spawn targets are async, by code object (functions, methods, partials of
#: them) or by class (callable objects): never by the target itself, so a closure or
#: partial made per spawn is not kept alive here
_async_targets: dict[Any, bool] = {}


def check_target(fn: Any) -> str:
    """Check that ``fn`` is an async callable (``TypeError`` saying why not); return a
    label for logs."""
    code = getattr(fn, "__code__", None)
    if code is not None and _async_targets.get(code):  # fast path: a known async function
        return str(fn.__qualname__)
    return _check_target(fn)


def entry_refusal(config: Any, entry_id: str, *, durable: bool) -> str | None:
    """Why the config entry ``entry_id`` cannot be spawned on a workflow host
    (``durable``) or a process host, or ``None``: its kind says what it is (API.md). A
    ``function.py`` entry is an activity, which a workflow calls, on no host (the words
    ``garrison run --main`` says it in). A ``workflow.py`` entry on a process host: run
    as a plain process, its function fails at its first workflow call, or, calling
    only activities (plain calls outside a workflow), returns without a journal,
    durable in name only."""
    entries = getattr(config, "entries", None)
    entry = entries.get(entry_id) if entries is not None else None
    kind = getattr(entry, "kind", None)
    if kind == "function.py":
        return (f"config entry {entry_id!r} is a function.py (an activity, run by "
                "workflows), not a runnable target")
    if kind == "workflow.py" and not durable:
        return (f"config entry {entry_id!r} is a workflow.py: it runs as a durable "
                f"workflow, on a workflow host (node.start_workflow({entry_id!r}), or "
                "spawn it with host='workflows'), not as a plain process")
    return None


def check_entry(config: Any, entry_id: Any, *, durable: bool) -> None:
    """``TypeError`` saying :func:`entry_refusal`'s why, if ``entry_id`` is an entry id
    that cannot be spawned so."""
    if isinstance(entry_id, str):
        why = entry_refusal(config, entry_id, durable=durable)
        if why is not None:
            raise TypeError(why)


def _class_refusal(cls: type) -> str:
    """Why the class ``cls`` is no process target (calling it makes an instance, not an
    awaitable): the end of a message that names it."""
    name = getattr(cls, "__qualname__", None) or cls.__name__
    if inspect.iscoroutinefunction(getattr(cls, "__call__", None)):  # noqa: B004
        return (f"{name} is a class: a process target must be an async function (async "
                f"def) or an object with an async __call__; pass an instance ({name}(...)), "
                "not the class")
    return (f"{name} is a class: a process target must be an async function (async def) "
            "or an object with an async __call__")


def _check_target(fn: Any) -> str:
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    if isinstance(inner, type):  # (never cached: every class has the type ``type``)
        raise TypeError(f"cannot spawn {fn!r}: {_class_refusal(inner)}")
    key = getattr(inner, "__code__", None)
    if key is None:
        key = type(inner)
    ok = _async_targets.get(key)
    if ok is None:
        plain = inspect.isfunction(inner) or inspect.ismethod(inner)
        call = inner if plain else getattr(inner, "__call__", None)  # noqa: B004
        ok = call is not None and inspect.iscoroutinefunction(call)
        if len(_async_targets) < _CACHE_SIZE:
            _async_targets[key] = ok
    if not ok:
        raise TypeError(
            f"cannot spawn {fn!r}: a process target must be an async function "
            "(async def) or an object with an async __call__"
        )
    return getattr(inner, "__qualname__", None) or type(inner).__name__


def activity_refusal(fn: Any) -> str | None:
    """Why ``fn`` cannot run as a workflow because it is an ``@activity`` (the message
    every workflow start and schedule gives), or ``None``."""
    opts = getattr(fn, "__garrison_activity__", None)
    if opts is None:
        return None
    # its journal name (a script's module is named as its file, not ``__main__``)
    name = getattr(opts, "name", None) or \
        f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    return (f"cannot run the activity {name} as a workflow: it is an activity, not a "
            "workflow function (call it from a workflow)")


def workflow_refusal(fn: Any) -> str | None:
    """Why ``fn`` found by its name (a replay's target, or the function a workflow
    recorded) cannot run as a workflow, an ``@activity`` or no async function: the end
    of a message that names it; ``None`` when it can."""
    refused = activity_refusal(fn)
    if refused is not None:
        return refused
    if not inspect.iscoroutinefunction(getattr(fn, "__wrapped__", fn)) \
            and not inspect.iscoroutinefunction(fn):
        return "a workflow function is an async function (async def)"
    return None


def workflow_refused_now(fn: Any) -> str | None:
    """Why ``fn``, the function a workflow recorded found by its name, is no workflow
    function now (a sync ``def``, an activity, not a function): a difference of each
    workflow that runs it, as :func:`function_gone`'s (the end of a message that names
    it); ``None`` when it can run."""
    refused = workflow_refusal(fn)
    return None if refused is None else f"which is no workflow function now: {refused}."


def function_gone(name: str, exc: Exception) -> str | None:
    """Why importing a workflow's recorded function ``name`` (``module:qualname``)
    failed with ``exc`` when its module imports but has no such function: renamed or
    removed, a difference of each workflow that runs it (a node blocks them), not code
    that cannot be found (the end of a message that names it); ``None`` otherwise."""
    # (an AttributeError of the module's own import leaves it out of sys.modules)
    if isinstance(exc, AttributeError) and name.partition(":")[0] in sys.modules:
        return (f"which its module no longer has ({type(exc).__name__}: {exc}): renamed or "
                "removed?")
    return None


def _target_name(fn: Any) -> str:
    refused = activity_refusal(fn)
    if refused is not None:
        raise TypeError(refused)
    inner = fn
    while isinstance(inner, functools.partial):
        raise TypeError(f"cannot run {fn!r} as a workflow: a functools.partial is not "
                        "importable by name after a restart; use a module-level async function")
    module = getattr(inner, "__module__", None)
    qualname = getattr(inner, "__qualname__", None)
    if module == "__main__" and qualname:
        module = main_function_module(inner, qualname)
        if module == "__main__":
            _warn_main(qualname)
    if not module or not qualname:
        raise TypeError(f"cannot run {fn!r} as a workflow: it must be a module-level async "
                        "function importable by its module:qualname (it is found again by that "
                        "name after a restart)")
    if "<lambda>" in qualname:
        raise TypeError(f"cannot run a lambda ({module}:{qualname}) as a workflow: it must be "
                        "importable by its module:qualname to be found again after a restart")
    if "<locals>" in qualname:
        raise TypeError(f"cannot run the closure {module}:{qualname} as a workflow: it must be "
                        "a module-level function, importable by its module:qualname to be found "
                        "again after a restart")
    if not inspect.iscoroutinefunction(inner):
        raise TypeError(f"cannot run {module}:{qualname} as a workflow: it must be an async "
                        "function (async def)")
    if inspect.ismethod(inner):  # (Temporal's workflow classes: Flow().run)
        bound = inner.__self__
        to = (f"class {bound.__name__}" if isinstance(bound, type)
              else f"a {type(bound).__name__} instance")
        raise TypeError(f"cannot run the method {module}:{qualname} (bound to {to}) as a "
                        "workflow: after a restart a workflow is found again by its "
                        "module:qualname, without what it was bound to; make it a "
                        "module-level async function (or a @staticmethod) and pass what the "
                        "instance held as its arguments")
    name = f"{module}:{qualname}"
    try:
        found = import_target(name)
    except Exception as exc:
        raise TypeError(f"cannot run {name} as a workflow: it is not importable by that name "
                        f"({type(exc).__name__}: {exc})") from None
    if found is not inner and getattr(found, "__wrapped__", None) is not inner:
        raise TypeError(f"cannot run {name} as a workflow: importing that name gives another "
                        "object, so it could not be found again after a restart")
    return name


#: functions typed at an interactive console whose namespace is not ``__main__``'s
#: (``python -m trio``), by ``__main__:qualname``: :func:`import_target` finds them in
#: this process (the latest of a name typed again)
_interactive: dict[str, Any] = {}


def main_function_module(fn: Any, qualname: str) -> str:
    """The module name recorded for ``fn``, a function of ``__main__``: the script's
    module name when this process runs one (``python app.py``: ``app``, as another
    process imports it), else ``"__main__"``. A function typed at an interactive console
    whose namespace is not the ``__main__`` module (``python -m trio``'s) is
    ``"__main__"`` too, and remembered so that this process finds it by that name."""
    main = sys.modules.get("__main__")
    try:  # (a decorator's wrapper has its own module's globals)
        namespace = getattr(inspect.unwrap(fn), "__globals__", None)
    except ValueError:  # a cycle of __wrapped__
        namespace = None
    if isinstance(namespace, dict) and namespace.get("__name__") == "__main__" \
            and namespace is not getattr(main, "__dict__", None) and hasattr(sys, "ps1"):
        # (an interactive console sets sys.ps1; a runner that executes a script in a
        # namespace of its own, as cProfile does, is no console: its functions are
        # refused as before, as no process could find them again)
        name = f"__main__:{qualname}"
        if name in _interactive or len(_interactive) < _CACHE_SIZE:
            _interactive[name] = fn
        return "__main__"
    return main_module_name() or "__main__"


_warned_main: set[str] = set()


def _warn_main(qualname: str) -> None:
    """Once per function: a workflow or activity of ``__main__`` that no other process
    can import by that name (see :func:`main_module_name`)."""
    if qualname in _warned_main:
        return
    _warned_main.add(qualname)
    logging.getLogger("garrison").warning(
        "__main__:%s is recorded under the name __main__ (this process runs no script "
        "importable by a module name: an interactive session, python -c, or a file "
        "named so): only a process that runs the same code as __main__ finds it again "
        "after a restart; move it to a module of its own", qualname)


def is_script(spec: str) -> bool:
    """Whether a command-line target names a Python file (``.py`` in any case:
    ``JOB.PY`` too) rather than a module."""
    return spec.lower().endswith(".py")


def script_spec(name: str, path: Path) -> importlib.machinery.ModuleSpec:
    """The spec to import the file ``path`` as module ``name`` (importlib picks a loader
    by a lower-case suffix only: a ``.PY`` file gets none)."""
    spec = importlib.util.spec_from_file_location(
        name, path, loader=importlib.machinery.SourceFileLoader(name, str(path)))
    assert spec is not None
    return spec


@contextlib.contextmanager
def exit_is_import_error(module: str) -> Iterator[None]:
    """Importing ``module`` here: a ``sys.exit()`` it calls while imported (a script's
    ``if not args: sys.exit(...)`` at its top) is an ``ImportError`` naming it, not the
    exit of the node or the command that imports it (silent, with the script's code)."""
    try:
        yield
    except SystemExit as exc:
        raise _exited(module, exc) from None


def _exited(module: str, exc: SystemExit) -> ImportError:
    return ImportError(f"{module!r} called sys.exit({exc.code!r}) while it was imported")


@functools.cache
def main_module_name() -> str | None:
    """The module name of the script this process runs as ``__main__`` (``python
    app.py``: ``app``; ``python -m pkg.app``: ``pkg.app``), by which another process
    imports it; ``None`` when there is none (an interactive session, ``python -c``, a
    file name that is no module name or is a standard library module's, one another
    module of ``sys.path`` has, a link named otherwise than its file)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    file = getattr(main, "__file__", None)
    if not file:
        return None
    stem = Path(file).stem
    if not stem.isidentifier() or stem in sys.stdlib_module_names:
        return None
    try:
        found = importlib.util.find_spec(stem)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    try:
        same = origin is not None and os.path.samefile(origin, file)
    except OSError:
        same = False
    return stem if same else None


def import_target(name: str) -> Any:
    """Import ``module:qualname`` (a ``sys.exit()`` at its import is an ``ImportError``,
    see :func:`exit_is_import_error`). The script this process runs (``python app.py``)
    is found under its module name (``app``) without being imported a second time."""
    module, _, qualname = name.partition(":")
    if module == "__main__" and name in _interactive:
        return _interactive[name]
    obj: Any = sys.modules["__main__"] if module == main_module_name() \
        else sys.modules.get(module)  # (the script itself, not a copy it imported)
    if obj is None:
        try:  # (not that context manager: this runs at every workflow's result)
            obj = importlib.import_module(module)
        except SystemExit as exc:
            raise _exited(module, exc) from None
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
