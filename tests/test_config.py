"""The YAML config loader: defaults, every kind of mistake, dependency order, backoff."""

from __future__ import annotations

import copy
import random
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from config_fixtures import app_mod  # noqa: E402

from garrison._duration import parse_rate  # noqa: E402
from garrison._errors import ConfigError  # noqa: E402
from garrison.config import (  # noqa: E402
    Config,
    HostEntry,
    Lifecycle,
    RestartPolicy,
    ServiceEntry,
    SourceEntry,
    WorkflowHostEntry,
    check_config,
    load_config,
    load_config_text,
    load_configs,
)

MOD = "config_fixtures.app_mod"

FULL = f"""
version: "1.0"
namespace: app
entries:
  - {{name: processes, kind: process.host}}
  - {{name: workflows, kind: workflow.host, store: app.db}}
  - {{name: handler, kind: process.py, source: "{MOD}:main"}}
  - name: session_manager
    kind: process.service
    process: app:handler
    host: app:processes
    input: ["arg1"]
    lifecycle:
      auto_start: true
      requires: [app:other_service]
      start_timeout: 10s
      stop_timeout: 10s
      stable_threshold: 5s
      restart: {{max_attempts: 10, initial_delay: 1s, max_delay: 90s,
                backoff_factor: 2.0, jitter: 0.1}}
  - {{name: other_service, kind: process.service, process: handler}}
  - {{name: order_workflow, kind: workflow.py, source: "{MOD}:order_workflow"}}
  - {{name: charge, kind: function.py, source: "{MOD}:charge"}}
"""


def write(tmp_path: Path, text: str, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(info.value.problems)
    assert check_config(path) == info.value.problems
    return str(path), info.value.problems


# --------------------------------------------------------------------------- valid


def test_a_config_starting_with_a_byte_order_mark_reads_as_one_without(
        tmp_path: Path) -> None:
    """A config a Windows editor saved as "UTF-8 with BOM" (``EF BB BF`` first) is the
    same config (the YAML parser skips the mark), and its problems name the same
    lines: ``garrison run`` and ``garrison check`` take it as it is."""
    plain = write(tmp_path, FULL)
    marked = tmp_path / "bom.yaml"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_config(marked).entries == load_config(plain).entries
    assert check_config(marked) == []
    bad = "version: '1.0'\nnamespace: app\nentries:\n  - {name: x, kind: process.host\n"
    (tmp_path / "bad.yaml").write_text(bad)
    (tmp_path / "bad_bom.yaml").write_bytes(b"\xef\xbb\xbf" + bad.encode())
    (problem,) = check_config(tmp_path / "bad_bom.yaml")
    assert problem.replace("bad_bom.yaml", "bad.yaml") == \
        check_config(tmp_path / "bad.yaml")[0], problem
    assert "line 5, column 1" in problem, problem


def test_full_config_parses_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.source_path == path
    assert list(config.entries) == [
        "app:processes",
        "app:workflows",
        "app:handler",
        "app:session_manager",
        "app:other_service",
        "app:order_workflow",
        "app:charge",
    ]
    assert config["app:processes"] == HostEntry(id="app:processes")
    wf_host = config["app:workflows"]
    assert isinstance(wf_host, WorkflowHostEntry)
    assert wf_host.store == str(tmp_path.resolve() / "app.db")
    assert wf_host.synchronous == "normal"
    assert [h.id for h in config.hosts()] == ["app:processes", "app:workflows"]

    handler = config["app:handler"]
    assert isinstance(handler, SourceEntry)
    assert handler.kind == "process.py"
    assert handler.func is app_mod.main
    assert config.resolve_target("app:order_workflow") is app_mod.order_workflow
    assert config.resolve_target("app:charge") is app_mod.charge  # sync activity is fine
    assert config.resolve_target("app:session_manager") is app_mod.main

    sm = config["app:session_manager"]
    assert isinstance(sm, ServiceEntry)
    assert sm.process == "app:handler"
    assert sm.host == "app:processes"
    assert sm.input == ("arg1",)
    assert sm.lifecycle.auto_start is True
    assert sm.requires == ("app:other_service",)
    assert sm.restart == RestartPolicy(max_attempts=10)

    other = config["app:other_service"]
    assert isinstance(other, ServiceEntry)
    assert other.process == "app:handler"
    assert other.host == "processes"  # the node's built-in process host
    assert other.input == ()
    assert other.lifecycle == Lifecycle()
    lc = other.lifecycle
    assert (lc.auto_start, lc.requires) == (False, ())
    assert (lc.start_timeout, lc.stop_timeout, lc.stable_threshold) == (10.0, 10.0, 5.0)
    r = lc.restart
    assert (r.max_attempts, r.initial_delay, r.max_delay, r.backoff_factor, r.jitter) == (
        0,
        1.0,
        90.0,
        2.0,
        0.1,
    )
    assert [s.id for s in config.services()] == ["app:other_service", "app:session_manager"]


def test_aliases_numbers_single_input_and_builtin_hosts() -> None:
    config = load_config_text(
        f"""
version: 1
namespace: app
entries:
  - {{name: h, kind: process.py, source: "{MOD}:main"}}
  - {{name: w, kind: workflow.py, source: "{MOD}:order_workflow"}}
  - name: a
    kind: process.service
    process: w
    host: workflows
    input: 42
    lifecycle: {{depends_on: [b], stop_timeout: 2.5, restart: {{initial_delay: 250ms}}}}
  - {{name: b, kind: process.service, process: app:h, input: [[1, 2]]}}
  - {{name: c, kind: process.service, process: app:h, input: null}}
  - {{name: d, kind: process.service, process: app:h, input: [null]}}
  - {{name: e, kind: process.service, process: app:h, input:}}
"""
    )
    a = config["app:a"]
    assert isinstance(a, ServiceEntry)
    assert a.host == "workflows"
    assert a.input == (42,)
    assert a.requires == ("app:b",)
    assert a.lifecycle.stop_timeout == 2.5
    assert a.restart.initial_delay == 0.25
    b = config["app:b"]
    assert isinstance(b, ServiceEntry)
    assert b.input == ([1, 2],)
    # (README: an empty input, or null, is no arguments; one None argument is [null])
    assert [config[f"app:{n}"].input for n in "cde"] == [(), (None,), ()]  # type: ignore[attr-defined]
    assert config.source_path is None


def test_merge_files_with_cross_namespace_references(tmp_path: Path) -> None:
    lib = write(
        tmp_path,
        f"""
        version: "1.0"
        namespace: lib
        entries:
          - {{name: worker, kind: process.py, source: "{MOD}:other"}}
          - {{name: db, kind: process.service, process: worker}}
        """,
        "lib.yaml",
    )
    app = write(
        tmp_path,
        """
        version: "1.0"
        namespace: app
        entries:
          - {name: web, kind: process.service, process: lib:worker,
             lifecycle: {requires: [lib:db]}}
        """,
    )
    config = load_configs([app, lib])
    assert [s.id for s in config.services()] == ["lib:db", "app:web"]
    assert config.source_paths == (app, lib)
    with pytest.raises(ConfigError) as info:
        load_configs([app])
    assert info.value.problems == [
        f"{app}: entry 'app:web' (index 0): field 'process': unknown entry 'lib:worker' "
        "(expected a process.py or workflow.py entry)",
        f"{app}: entry 'app:web' (index 0): field 'lifecycle.requires': unknown entry "
        "'lib:db' (expected a process.service)",
    ]


def test_dependency_order_is_topological_and_stable() -> None:
    config = load_config_text(
        f"""
version: "1.0"
namespace: ns
entries:
  - {{name: p, kind: process.py, source: "{MOD}:main"}}
  - {{name: e, kind: process.service, process: p, lifecycle: {{requires: [d, b]}}}}
  - {{name: a, kind: process.service, process: p}}
  - {{name: d, kind: process.service, process: p, lifecycle: {{requires: [c]}}}}
  - {{name: c, kind: process.service, process: p}}
  - {{name: b, kind: process.service, process: p, lifecycle: {{requires: [a]}}}}
  - {{name: f, kind: process.service, process: p}}
"""
    )
    order = [s.id.split(":")[1] for s in config.services()]
    assert order == ["c", "d", "a", "b", "e", "f"]
    for i, service in enumerate(config.services()):
        earlier = {s.id for s in config.services()[:i]}
        assert set(service.requires) <= earlier


def test_cycle_message_names_the_path(tmp_path: Path) -> None:
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: ns
        entries:
          - {{name: p, kind: process.py, source: "{MOD}:main"}}
          - {{name: a, kind: process.service, process: p, lifecycle: {{requires: [b]}}}}
          - {{name: b, kind: process.service, process: p, lifecycle: {{requires: [c]}}}}
          - {{name: c, kind: process.service, process: p, lifecycle: {{depends_on: [ns:a]}}}}
          - {{name: s, kind: process.service, process: p, lifecycle: {{requires: [s]}}}}
        """,
    )
    assert problems == [
        f"{path}: entry 'ns:a' (index 1): field 'lifecycle.requires': "
        "dependency cycle ns:a -> ns:b -> ns:c -> ns:a",
        f"{path}: entry 'ns:s' (index 4): field 'lifecycle.requires': "
        "dependency cycle ns:s -> ns:s",
    ]


def test_a_service_required_twice_is_a_problem_of_its_requires(tmp_path: Path) -> None:
    """``requires: [app:c, c]`` (one service, by its full and its short id) loaded
    without a word, as one requirement: most likely another service was meant."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC
        + "  - {name: c, kind: process.service, process: p}\n"
        + "  - {name: b, kind: process.service, process: p, lifecycle: {requires: [app:c, c]}}\n"
        + "  - {name: d, kind: process.service, process: p, lifecycle: {depends_on: [c, c]}}\n",
    )
    assert problems == [
        f"{path}: entry 'app:b' (index 2): field 'lifecycle.requires': expected each service "
        "once, but 'app:c' is named twice (as 'app:c' and as 'c')",
        f"{path}: entry 'app:d' (index 3): field 'lifecycle.depends_on': expected each "
        "service once, but 'app:c' is named twice",
    ]


def test_a_wrong_name_required_twice_is_one_problem(tmp_path: Path) -> None:
    """``requires: [nope, nope]`` gave two lines for one mistake: 'unknown entry' and
    'named twice'; so did a process.py named twice. The name is reported once."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC
        + "  - {name: b, kind: process.service, process: p, lifecycle: {requires: [nope, nope]}}\n"
        + "  - {name: d, kind: process.service, process: p, lifecycle: {requires: [p, app:p]}}\n",
    )
    assert problems == [
        f"{path}: entry 'app:b' (index 1): field 'lifecycle.requires': unknown entry "
        "'app:nope' (expected a process.service)",
        f"{path}: entry 'app:d' (index 2): field 'lifecycle.requires': expected a "
        "process.service entry, but 'app:p' is a process.py",
    ]


def test_a_chain_of_thousands_of_services_loads_and_its_cycle_is_named(tmp_path: Path) -> None:
    """1,500 services, each requiring the one before, written dependents first: check and
    load gave a bare RecursionError traceback (the dependency walks recursed)."""
    n = 1_500
    chain = "".join(
        f"  - {{name: s{i}, kind: process.service, process: p, "
        f"lifecycle: {{requires: [s{i - 1}]}}}}\n" for i in range(n - 1, 0, -1))
    head = (f'version: "1.0"\nnamespace: ns\nentries:\n'
            f'  - {{name: p, kind: process.py, source: "{MOD}:main"}}\n')
    text = head + chain + "  - {name: s0, kind: process.service, process: p}\n"
    path = write(tmp_path, text)
    assert check_config(path) == []
    assert [s.id for s in load_config(path).services()] == [f"ns:s{i}" for i in range(n)]
    # closed into a ring: one cycle, named from the first entry of the file
    closed = f"process: p, lifecycle: {{requires: [s{n - 1}]}}}}\n"
    ring = write(tmp_path, text.replace("process: p}\n", closed), "ring.yaml")
    [problem] = check_config(ring)
    whole = (f"{ring}: entry 'ns:s{n - 1}' (index 1): field 'lifecycle.requires': dependency "
             "cycle " + " -> ".join(f"ns:s{i}" for i in [*range(n - 1, -1, -1), n - 1]))
    assert problem == f"{whole[:2_000]}... (cut: {len(whole):,} characters in all)"


def test_a_cycle_is_reported_with_the_other_problems_of_its_entries(tmp_path: Path) -> None:
    """One pass: services in a cycle that are wrong in other fields too get both."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC
        + "  - {name: a, kind: process.service, process: nope, lifecycle: {requires: [b]}}\n"
        + "  - {name: b, kind: process.service, process: p, host: nohost,"
          " lifecycle: {requires: [a]}}\n",
    )
    assert problems == [
        f"{path}: entry 'app:a' (index 1): field 'process': unknown entry 'app:nope' "
        "(expected a process.py or workflow.py entry)",
        f"{path}: entry 'app:b' (index 2): field 'host': unknown host 'app:nohost' "
        "(expected a process.host or workflow.host entry, or one of processes, workflows)",
        f"{path}: entry 'app:a' (index 1): field 'lifecycle.requires': "
        "dependency cycle app:a -> app:b -> app:a",
    ]


# --------------------------------------------------------------------------- malformed

HEAD = 'version: "1.0"\nnamespace: app\nentries:\n'
PROC = f'  - {{name: p, kind: process.py, source: "{MOD}:main"}}\n'

# (id, yaml text, expected fragments of the single problem line after "<file>: ")
BAD: list[tuple[str, str, list[str]]] = [
    ("yaml-syntax", HEAD + "  - {name: x, kind: [\n", ["YAML syntax error at line"]),
    ("top-level-list", "- a\n- b\n", ["expected a mapping", "at the top level", "got list"]),
    ("empty-file", "", ["expected a mapping", "empty document"]),
    ("missing-version", "namespace: app\nentries: []\n", ["field 'version'", "missing"]),
    ("bad-version", 'version: "2.0"\nnamespace: app\nentries: []\n',
     ["field 'version'", "'1.0'", "'2.0'"]),
    ("missing-namespace", 'version: "1"\nentries: []\n', ["field 'namespace'", "missing"]),
    ("bad-namespace", 'version: "1"\nnamespace: "a:b"\nentries: []\n',
     ["field 'namespace'", "'a:b'"]),
    ("unknown-top-level", 'version: "1"\nnamespace: a\nentrys: []\n', ["'entrys'", "entries"]),
    ("missing-entries", 'version: "1"\nnamespace: a\n',
     ["field 'entries'", "required field is missing", "`entries: []`"]),
    ("top-level-meta", 'version: "1"\nnamespace: a\nmeta: 5\nentries: []\n',
     ["field 'meta'", "expected a mapping, got 5"]),
    ("async-generator", HEAD + f'  - {{name: p, kind: process.py, source: "{MOD}:stream"}}\n',
     ["field 'source'", "got the async generator function (async def with yield)"]),
    ("factor-past-a-float", HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
     "lifecycle: {restart: {backoff_factor: " + "9" * 400 + "}}}\n",
     ["field 'lifecycle.restart.backoff_factor'",
      "expected a number a float can hold (up to about 1.8e308), got 999"]),
    ("entries-not-list", 'version: "1"\nnamespace: a\nentries: {a: 1}\n', ["'entries'", "list"]),
    ("entry-not-mapping", HEAD + "  - just a string\n", ["entry at index 0", "mapping"]),
    ("missing-name", HEAD + "  - {kind: process.host}\n", ["entry at index 0", "'name'"]),
    (
        "missing-kind",
        HEAD + "  - {name: x}\n",
        ["entry 'app:x' (index 0)", "field 'kind'", "missing"],
    ),
    (
        "unknown-kind",
        HEAD + "  - {name: x, kind: process.lua}\n",
        ["entry 'app:x' (index 0)", "field 'kind'", "'process.lua'", "process.service"],
    ),
    (
        "kind-list",
        HEAD + "  - {name: x, kind: [process.py]}\n",
        ["entry 'app:x' (index 0)", "field 'kind'", "unknown kind ['process.py']"],
    ),
    (
        "kind-mapping",
        HEAD + "  - {name: x, kind: {}}\n",
        ["entry 'app:x' (index 0)", "field 'kind'", "unknown kind {}"],
    ),
    (
        "unknown-field",
        HEAD + "  - {name: x, kind: process.host, color: red}\n",
        ["entry 'app:x' (index 0)", "field 'color'", "unknown field", "name, kind, workers"],
    ),
    (
        "bad-workers",
        HEAD + "  - {name: x, kind: process.host, workers: 0}\n",
        ["entry 'app:x' (index 0)", "field 'workers'", "expected an integer >= 1, got 0"],
    ),
    (
        "bad-synchronous",
        HEAD + "  - {name: w, kind: workflow.host, synchronous: off}\n",
        ["entry 'app:w' (index 0)", "field 'synchronous'", "got False"],
    ),
    (
        "bad-retention",
        HEAD + "  - {name: w, kind: workflow.host, retention: forever}\n",
        ["entry 'app:w' (index 0)", "field 'retention'",
         "expected a duration longer than 0 and at most 100 years (as '30d' or '12h'), "
         "got 'forever'"],
    ),
    (
        "bare-number-retention",
        HEAD + "  - {name: w, kind: workflow.host, retention: 30}\n",
        ["entry 'app:w' (index 0)", "field 'retention'",
         "expected a duration with its unit (as '30d' or '12h': a bare number would be "
         "seconds, and every workflow deleted that many seconds after it ended), got 30"],
    ),
    (
        "zero-retention",
        HEAD + "  - {name: w, kind: workflow.host, retention: 0s}\n",
        ["entry 'app:w' (index 0)", "field 'retention'", "got '0s'"],
    ),
    (
        "missing-source",
        HEAD + "  - {name: x, kind: process.py}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "required field is missing"],
    ),
    (
        "source-format",
        HEAD + "  - {name: x, kind: process.py, source: file://x.lua}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "expected 'module:function'"],
    ),
    (
        "module-missing",
        HEAD + "  - {name: x, kind: process.py, source: 'no_such_mod_zz:main'}\n",
        ["field 'source'", "module 'no_such_mod_zz'", "ModuleNotFoundError"],
    ),
    (
        "module-raises",
        HEAD + "  - {name: x, kind: process.py, source: 'config_fixtures.broken_mod:main'}\n",
        ["field 'source'", "config_fixtures.broken_mod", "RuntimeError: boom at import"],
    ),
    (
        "module-exits",
        HEAD + "  - {name: x, kind: process.py, source: 'config_fixtures.exit_mod:main'}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "module 'config_fixtures.exit_mod' "
         "could not be imported: SystemExit: 3"],
    ),
    (
        "module-raises-base-exception",
        HEAD + "  - {name: x, kind: process.py, source: 'config_fixtures.halt_mod:main'}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "Halt: stop here"],
    ),
    (  # (a PEP 562 module __getattr__ that imports a dependency not installed)
        "attribute-lookup-raises",
        HEAD + "  - {name: x, kind: process.py, source: 'config_fixtures.lazy_mod:main'}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "module 'config_fixtures.lazy_mod': "
         "getting 'main' raised ModuleNotFoundError: No module named 'heavy_optional_dep'"],
    ),
    (
        "object-whose-attribute-lookup-raises",
        HEAD + "  - {name: x, kind: process.py, source: 'config_fixtures.lazy_mod:odd'}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "expected a function, but looking into "
         "'config_fixtures.lazy_mod:odd' (of type Odd) raised KeyError: "],
    ),
    (
        "attribute-missing",
        HEAD + f"  - {{name: x, kind: process.py, source: '{MOD}:nope'}}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "has no attribute 'nope'"],
    ),
    (
        "process-not-async",
        HEAD + f"  - {{name: x, kind: process.py, source: '{MOD}:sync_main'}}\n",
        ["field 'source'", "expected an async function", "sync_main"],
    ),
    (
        "process-is-a-class",  # (its async __call__ is its instances')
        HEAD + f"  - {{name: x, kind: process.py, source: '{MOD}:Service'}}\n",
        ["entry 'app:x' (index 0)", "field 'source'", "expected an async function (async def) "
         f"or an object with an async __call__ for a process, got the class '{MOD}:Service'; "
         "name an instance, not the class: a module-level `service = Service()` and source "
         f"'{MOD}:service'"],
    ),
    (
        "workflow-is-a-class",
        HEAD + f"  - {{name: x, kind: workflow.py, source: '{MOD}:Service'}}\n",
        ["field 'source'", "expected an async function (async def) for a workflow, got the "
         f"class '{MOD}:Service'"],
    ),
    (
        "activity-not-callable",
        HEAD + f"  - {{name: x, kind: function.py, source: '{MOD}:not_callable'}}\n",
        ["field 'source'", "expected a callable (sync or async function), got int"],
    ),
    (
        "workflow-closure",
        HEAD + f"  - {{name: x, kind: workflow.py, source: '{MOD}:closure_workflow'}}\n",
        ["field 'source'", "closure", "module:qualname"],
    ),
    (
        "service-missing-process",
        HEAD + "  - {name: s, kind: process.service}\n",
        ["entry 'app:s' (index 0)", "field 'process'", "required field is missing"],
    ),
    (
        "service-process-is-host",
        HEAD + "  - {name: h, kind: process.host}\n  - {name: s, kind: process.service, "
        "process: h}\n",
        ["entry 'app:s' (index 1)", "field 'process'", "process.py or workflow.py", "'app:h'"],
    ),
    (
        "service-unknown-process",
        HEAD + "  - {name: s, kind: process.service, process: ghost}\n",
        ["entry 'app:s' (index 0)", "field 'process'", "unknown entry 'app:ghost'"],
    ),
    (
        "service-host-not-host",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, host: p}\n",
        ["entry 'app:s' (index 1)", "field 'host'", "process.host or workflow.host", "'app:p'"],
    ),
    (
        "service-unknown-host",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, host: other:h}\n",
        ["entry 'app:s' (index 1)", "field 'host'", "unknown host 'other:h'"],
    ),
    (
        "requires-non-service",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {requires: [p]}}\n",
        ["field 'lifecycle.requires'", "expected a process.service entry", "'app:p'"],
    ),
    (
        "requires-and-depends-on",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {requires: [], depends_on: []}}\n",
        ["entry 'app:s' (index 1)", "field 'lifecycle.depends_on'", "not both"],
    ),
    (
        "requires-not-list",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {depends_on: p}}\n",
        ["field 'lifecycle.depends_on'", "expected a list of entry ids, got 'p'"],
    ),
    (
        # the alias as written, also where a reference is checked (it said 'requires')
        "depends-on-unknown",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {depends_on: [nothere]}}\n",
        ["field 'lifecycle.depends_on'", "unknown entry 'app:nothere'"],
    ),
    (
        "depends-on-cycle",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {depends_on: [s]}}\n",
        ["field 'lifecycle.depends_on'", "dependency cycle"],
    ),
    (
        "stop-timeout-negative",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {stop_timeout: -1s}}\n",
        ["field 'lifecycle.stop_timeout'", "expected a duration that is not negative, "
         "such as 10, '250ms'", "got '-1s'"],
    ),
    (  # (garrison check said ok, then garrison run hung on SIGTERM without a word)
        "stop-timeout-infinite",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {stop_timeout: .inf}}\n",
        ["field 'lifecycle.stop_timeout': expected a duration of at most 100 years (a stop "
         "that waits for ever may never end: the node's stop waits for it), got inf"],
    ),
    (  # (an infinite delay: the service was never restarted, nor given up; it was
        # reported on max_delay, "expected a duration >= initial_delay (infs)")
        "restart-delay-infinite",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {initial_delay: .inf}}}\n",
        ["field 'lifecycle.restart.initial_delay': expected a duration of at most 100 "
         "years (a restart that waits for ever neither restarts nor gives up), got inf"],
    ),
    (
        "restart-max-delay-infinite",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {max_delay: .inf}}}\n",
        ["field 'lifecycle.restart.max_delay': expected a duration of at most 100 years"],
    ),
    (  # (helper-229: "ok" from garrison check, then a service in backoff for good)
        "restart-delay-huge",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {max_delay: 1e300}}}\n",
        ["field 'lifecycle.restart.max_delay': expected a duration of at most 100 years",
         "got 1e+300"],
    ),
    (  # (YAML read a number: it said nothing of quoting)
        "name-a-number",
        HEAD + f"  - {{name: 123, kind: process.py, source: \"{MOD}:main\"}}\n",
        ["field 'name': expected a non-empty name", "got 123 (YAML read an int, not a "
         "string: put the name in quotes, as written)"],
    ),
    (  # (NaN is not a negative duration: it was told "not negative" too)
        "stop-timeout-nan",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {stop_timeout: .nan}}\n",
        ["field 'lifecycle.stop_timeout'", "expected a duration such as 10, '250ms'",
         "got nan"],
    ),
    (
        "auto-start-not-bool",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {auto_start: 'sure'}}\n",
        ["field 'lifecycle.auto_start'", "expected true or false, got 'sure'"],
    ),
    (
        "bad-duration",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {stop_timeout: 10 seconds}}\n",
        ["field 'lifecycle.stop_timeout'", "expected a duration", "'10 seconds'"],
    ),
    (
        "backoff-factor",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {backoff_factor: 0.5}}}\n",
        [
            "entry 'app:s' (index 1)",
            "field 'lifecycle.restart.backoff_factor': expected a number >= 1, got 0.5",
        ],
    ),
    (
        "jitter-range",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {jitter: 1.5}}}\n",
        ["field 'lifecycle.restart.jitter'", "between 0 and 1", "1.5"],
    ),
    (
        "max-attempts-negative",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {max_attempts: -1}}}\n",
        ["field 'lifecycle.restart.max_attempts'", "expected an integer >= 0, got -1"],
    ),
    (
        "max-attempts-float",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {max_attempts: 2.5}}}\n",
        ["field 'lifecycle.restart.max_attempts'", "expected an integer >= 0, got 2.5"],
    ),
    (
        "max-delay-below-initial",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {initial_delay: 10s, max_delay: 1s}}}\n",
        ["field 'lifecycle.restart.max_delay'", ">= initial_delay (10s)", "got 1.0"],
    ),
    (
        "restart-unknown-field",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: {retries: 3}}}\n",
        ["field 'lifecycle.restart.retries'", "unknown field", "max_attempts, initial_delay"],
    ),
    (
        "restart-not-mapping",
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {restart: always}}\n",
        ["field 'lifecycle.restart'", "expected a mapping, got 'always'"],
    ),
    (
        "duplicate-id",
        HEAD + "  - {name: h, kind: process.host}\n  - {name: h, kind: workflow.host}\n",
        ["entry 'app:h' (index 1)", "field 'name'", "duplicate entry id 'app:h'", "index 0"],
    ),
    (
        "duplicate-yaml-key",
        HEAD + "  - {name: h, kind: process.host, name: g}\n",
        ["YAML syntax error at line 4", "duplicate key 'name'"],
    ),
]


@pytest.mark.parametrize(("text", "fragments"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_config_reports_file_entry_and_field(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    (line,) = problems
    assert line.startswith(f"{path}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_a_bad_requires_beside_its_alias_is_named_requires(tmp_path: Path) -> None:
    """Both given: the alias is dropped with a problem of its own, and a bad value of
    ``requires`` is named ``requires`` (it was named ``depends_on``)."""
    _path, problems = problems_of(tmp_path, HEAD + PROC + (
        "  - {name: s, kind: process.service, process: p, "
        "lifecycle: {depends_on: [p], requires: 5}}\n"))
    assert [line.split(": ", 1)[1] for line in problems] == [
        "entry 'app:s' (index 1): field 'lifecycle.depends_on': give either 'requires' or "
        "its alias 'depends_on', not both",
        "entry 'app:s' (index 1): field 'lifecycle.requires': expected a list of entry ids, "
        "got 5"]


def test_a_key_written_beside_a_yaml_merge_key_overrides_the_merged_one(tmp_path: Path) -> None:
    """``<<: *anchor`` then ``name: b``: YAML's override, not a duplicate key (the
    duplicate check ran after the merge)."""
    text = (HEAD + PROC + "  - &svc {name: a, kind: process.service, process: p}\n"
            "  - <<: *svc\n    name: b\n")
    path = tmp_path / "app.yaml"
    path.write_text(text)
    assert check_config(path) == []
    assert {"app:a", "app:b"} <= set(load_config(path).entries)
    _, problems = problems_of(tmp_path, HEAD + "  - {name: h, kind: process.host, name: g}\n")
    assert any("duplicate key 'name'" in p for p in problems)  # a written one still is


def test_yaml_merge_keys_follow_the_merge_spec(tmp_path: Path) -> None:
    """``<<: [*strict, *loose]`` gave the later mapping's values (PyYAML 6 told keys apart
    by the identity of their strings, so only one-letter keys merged right); YAML's merge
    spec: a key written in the mapping wins, then the earlier of the merged mappings.
    ``<<`` written twice in one mapping was taken silently (the later one's values): it
    is a duplicate key like any other."""
    restart = ("  - {name: s, kind: process.service, process: p,\n"
               "     lifecycle: {restart: {<<: %s, jitter: 0.5}}}\n")
    text = (HEAD + PROC
            + "  - {name: a, kind: process.service, process: p, lifecycle: {restart: &strict"
              " {max_attempts: 1, initial_delay: 2, jitter: 0.2}}}\n"
            + "  - {name: b, kind: process.service, process: p, lifecycle: {restart: &loose"
              " {max_attempts: 9, initial_delay: 7, max_delay: 99}}}\n")
    config = load_config(write(tmp_path, text + restart % "[*strict, *loose]"))
    policy = config.entries["app:s"].restart  # type: ignore[union-attr]
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay, policy.jitter) == (
        1, 2.0, 99.0, 0.5)
    assert config.entries["app:b"].restart.max_attempts == 9  # type: ignore[union-attr]
    path, problems = problems_of(tmp_path, text + restart.replace("<<: %s", "<<: *strict, "
                                                                  "<<: *loose"))
    assert problems == [f"{path}: YAML syntax error at line 8, column 41: duplicate key '<<'"]


def test_an_alias_inside_what_it_names_is_said_with_its_line(tmp_path: Path) -> None:
    """``&e {..., input: [*e]}`` made a value that holds itself: reported as "values
    nested too deeply (hundreds of levels deep)", with no line and no word of the
    alias."""
    path, problems = problems_of(tmp_path, HEAD + PROC + (
        "  - &e {name: x, kind: process.service, process: p, input: [*e]}\n"))
    assert problems == [
        f"{path}: YAML syntax error at line 5, column 61: the alias *e refers to the "
        "mapping that contains it (&e, line 5): a value cannot hold itself"]


def test_every_duplicate_yaml_key_is_reported_at_once(tmp_path: Path) -> None:
    """The loader stopped at the first duplicate key: a file with three needed three
    rounds of ``garrison check``. Each is said, with its line, and nothing else of a
    file whose meaning is unclear is checked."""
    text = (HEAD + "  - {name: h, kind: process.host, name: g}\n"
            "  - name: w\n    kind: workflow.host\n    kind: process.host\n"
            "namespace: other\n")
    path, problems = problems_of(tmp_path, text)
    assert problems == [
        f"{path}: YAML syntax error at line 4, column 35: duplicate key 'name'",
        f"{path}: YAML syntax error at line 7, column 5: duplicate key 'kind'",
        f"{path}: YAML syntax error at line 8, column 1: duplicate key 'namespace'",
    ], problems


def _aliases(levels: int) -> str:
    """A config whose service's input holds ``*a{levels-1}``: each level an alias list
    of ten aliases of the one before (``10 ** levels`` values once expanded)."""
    lines = ['version: "1.0"', "namespace: app", "meta:",
             '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]"
              for i in range(1, levels)]
    lines += ["entries:", ' - {name: p, kind: process.py, source: "asyncio:sleep"}',
              " - {name: s, kind: process.service, process: app:p, "
              f"input: [1, *a{levels - 1}, 3]}}"]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_that_expand_without_bound_are_refused_in_one_short_line() -> None:
    """A few lines of aliases of aliases stand for billions of values: the file is
    refused before anything walks them (reporting a bad input's value printed it
    whole: 700 KB at five levels, gigabytes at eight)."""
    for levels in (5, 9):
        with pytest.raises(ConfigError) as info:
            load_config_text(_aliases(levels), "laughs.yaml")
        assert str(info.value).splitlines()[-1] == (
            "laughs.yaml: its aliases (*name) expand to more than 100,000 values: not "
            "loaded (an alias of an alias of ... repeats what it names)")
    with pytest.raises(ConfigError) as info:  # (10,000 values: the entry's problem, cut)
        load_config_text(_aliases(4), "laughs.yaml")
    line = str(info.value).splitlines()[-1]
    assert line.startswith("laughs.yaml: entry 'app:s' (index 1): field 'input': ")
    assert line.endswith(" characters in all)") and len(line) < 2_100, line[-200:]


def test_a_config_too_big_says_so_not_that_its_aliases_expand(tmp_path: Path) -> None:
    """helper-213: 20,000 entries with no alias at all were refused as "its aliases
    (*name) expand to more than 100,000 values"; and ``garrison check /dev/zero`` read
    without end (3 GB in 8 s). A config of too many values says so; a file past 16 MiB
    (or one that never ends) is refused as it is read."""
    # (one list of 100,001 values: the same count as 20,000 entries, parsed in a
    # quarter of the time)
    text = HEAD + "  - {name: p, kind: process.py, source: x, input: [" \
        + ",".join(["0"] * 100_001) + "]}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "many.yaml")
    assert str(info.value).splitlines()[-1] == (
        "many.yaml: it holds more than 100,000 values (lists, mappings and the values in "
        "them): not loaded")
    assert check_config("/dev/zero") == [
        "/dev/zero: cannot read the file: larger than 16 MiB, which no config is"]
    big = tmp_path / "big.yaml"
    big.write_text(HEAD + "# " + "x" * (16 << 20) + "\n")
    assert check_config(big) == [
        f"{big}: cannot read the file: larger than 16 MiB, which no config is"]


def test_values_nested_thousands_deep_are_a_config_error(tmp_path: Path) -> None:
    text = HEAD + "  - {name: p, kind: process.py, source: x, input: " + "[" * 3000 \
        + "]" * 3000 + "}\n"
    with pytest.raises(ConfigError, match=r"deep\.yaml: values nested too deeply"):
        load_config_text(text, "deep.yaml")
    (tmp_path / "deep.yaml").write_text(text)
    assert check_config(tmp_path / "deep.yaml") == [
        f"{tmp_path / 'deep.yaml'}: values nested too deeply (lists or mappings hundreds of "
        "levels deep)"]


@pytest.mark.parametrize("namespace", ["", "namespace: 'a b'\n"])
def test_a_missing_or_bad_namespace_hides_no_other_problem(tmp_path: Path,
                                                          namespace: str) -> None:
    text = ('version: "1.0"\n' + namespace + "entries:\n"
            "  - {name: p, kind: process.py, source: 7}\n"
            "  - {name: q, kind: nosuch.kind}\n")
    _, problems = problems_of(tmp_path, text)
    assert len(problems) == 3, problems
    assert "field 'namespace'" in problems[0]
    assert ("(index 0): field 'source': expected 'module:function' (e.g. "
            "'myapp.jobs:main'), got 7") in problems[1]
    assert "(index 1): field 'kind': unknown kind 'nosuch.kind'" in problems[2]


def test_two_hosts_sharing_a_store_are_reported_beside_their_other_problems(
        tmp_path: Path) -> None:
    text = (HEAD + "  - {name: h2, kind: workflow.host, store: app.db, rate: abc}\n"
            "  - {name: h3, kind: workflow.host, store: app.db}\n")
    _, problems = problems_of(tmp_path, text)
    assert len(problems) == 2, problems
    assert "entry 'app:h2' (index 0): field 'rate'" in problems[0]
    assert "entry 'app:h3' (index 1): field 'store'" in problems[1]
    assert "is also the store of entry 'app:h2'" in problems[1]


def test_no_value_in_any_field_escapes_as_anything_but_a_config_error() -> None:
    # every field of every kind (nested ones too), set to values of every YAML type
    weird: list[object] = [[], {}, None, 1.5, True, -1, "x", "", [[1]], {"a": []}, ["a", {}]]
    valid: dict[str, dict[str, Any]] = {
        "process.host": {"name": "h", "kind": "process.host", "workers": 2},
        "workflow.host": {"name": "w", "kind": "workflow.host", "synchronous": "full"},
        "process.py": {"name": "p", "kind": "process.py", "source": f"{MOD}:main"},
        "process.service": {
            "name": "s", "kind": "process.service", "process": "p", "host": "h", "input": [1],
            "lifecycle": {
                "auto_start": True, "requires": [], "start_timeout": "1s", "stop_timeout": 1,
                "stable_threshold": 1,
                "restart": {"max_attempts": 1, "initial_delay": 1, "max_delay": 2,
                            "backoff_factor": 2, "jitter": 0.1},
            },
        },
    }

    def paths(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        for key, value in d.items():
            yield (*prefix, key)
            if isinstance(value, dict):
                yield from paths(value, (*prefix, key))

    for kind, entry in valid.items():
        for path in paths(entry):
            for value in weird:
                broken = copy.deepcopy(entry)
                inner = broken
                for key in path[:-1]:
                    inner = inner[key]
                inner[path[-1]] = value
                others = [valid["process.host"], valid["process.py"]]
                doc = {"version": "1.0", "namespace": "app",
                       "entries": [*(others if kind == "process.service" else []), broken]}
                try:
                    load_config_text(yaml.safe_dump(doc))
                except ConfigError:
                    pass


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: file not found"]
    assert Config.check(missing) == [f"{missing}: file not found"]


def test_three_mistakes_are_all_reported(tmp_path: Path) -> None:
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: p, kind: process.py, source: "{MOD}:sync_main"}}
          - {{name: h, kind: process.host, colour: blue}}
          - name: s
            kind: process.service
            process: {MOD}
            lifecycle: {{restart: {{backoff_factor: 0.5}}}}
        """,
    )
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{path}: entry 'app:p' (index 0): field 'source': ")
    assert problems[1].startswith(f"{path}: entry 'app:h' (index 1): field 'colour': ")
    assert problems[2] == (
        f"{path}: entry 'app:s' (index 2): field 'lifecycle.restart.backoff_factor': "
        "expected a number >= 1, got 0.5"
    )
    # a bad field does not hide the entry's bad reference (one pass, every problem)
    assert problems[3] == (
        f"{path}: entry 'app:s' (index 2): field 'process': unknown entry "
        f"'app:{MOD}' (expected a process.py or workflow.py entry)"
    )


def test_every_bad_restart_field_in_one_block_is_reported(tmp_path: Path) -> None:
    _, problems = problems_of(
        tmp_path,
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, lifecycle: {restart: "
        "{max_attempts: -2, initial_delay: 5s, max_delay: 1s, backoff_factor: 0, jitter: -1, "
        "extra: 1}}}\n",
    )
    fields = sorted(line.split("field '")[1].split("'")[0] for line in problems)
    assert fields == [
        f"lifecycle.restart.{f}"
        for f in ("backoff_factor", "extra", "jitter", "max_attempts", "max_delay")
    ]


def test_a_restart_delay_beside_one_that_cannot_be_read_is_still_checked(
        tmp_path: Path) -> None:
    """``initial_delay: .nan`` and ``max_delay: .inf``: only initial_delay was said (the
    check of max_delay, which compares it with initial_delay, was skipped whole), though
    one bad field does not hide the other fields of its entry. Its own check still runs;
    the comparison with a delay not as given does not."""
    _, problems = problems_of(tmp_path, HEAD + PROC + (
        "  - {name: s, kind: process.service, process: p, lifecycle: {restart: "
        "{initial_delay: .nan, max_delay: .inf}}}\n"))
    assert [line.split("field ", 1)[1] for line in problems] == [
        "'lifecycle.restart.initial_delay': expected a duration such as 10, '250ms', '30s', "
        "'5m' or '1h30m', got nan",
        "'lifecycle.restart.max_delay': expected a duration of at most 100 years (a restart "
        "that waits for ever neither restarts nor gives up), got inf"]
    _, problems = problems_of(tmp_path, HEAD + PROC + (
        "  - {name: s, kind: process.service, process: p, lifecycle: {restart: "
        "{initial_delay: x, max_delay: 0.5}}}\n"))
    assert len(problems) == 1 and "initial_delay" in problems[0], problems


def test_a_schedule_the_node_would_keep_in_memory_is_a_problem_of_check_and_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two workflow.host entries and a schedule without ``host:``: ``garrison check``
    said ok, then ``garrison run`` refused it as the node started (its own
    ``workflows`` host keeps its store in memory), naming neither file nor field. Both
    say it as a problem of the entry; loaded for a node given a store, it is none."""
    from garrison._cli import build_parser

    path = write(tmp_path, HEAD + (
        f"  - {{name: w, kind: workflow.py, source: '{MOD}:report'}}\n"
        "  - {name: a, kind: workflow.host, store: a.db}\n"
        "  - {name: b, kind: workflow.host, store: b.db}\n"
        "  - {name: nightly, kind: workflow.schedule, workflow: w, cron: '0 3 * * *'}\n"
        "  - {name: kept, kind: workflow.schedule, workflow: w, every: 1h, host: a}\n"))
    line = (f"{path}: entry 'app:nightly' (index 3): field 'host': expected one of the "
            "config's workflow hosts (app:a, app:b): on the node's own host 'workflows' the "
            "schedule would be kept in memory, as the node is given no store (lost at the "
            "next start, and in none of the config's stores); or give the node a store "
            "(garrison run --store, open_node(store=...))")
    assert check_config(path) == [line]
    args = build_parser().parse_args(["run", str(path)])
    assert args.func(args) == 2
    assert capsys.readouterr().err == f"garrison run: invalid config:\n{line}\n"
    assert load_config(path).entries["app:nightly"].host == "workflows"  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.yaml"]


def test_valid_file_checks_clean(tmp_path: Path) -> None:
    assert check_config(write(tmp_path, FULL)) == []


def test_workflow_host_stores_that_cannot_be_opened_are_reported(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path, problems = problems_of(
        tmp_path,
        """
        version: "1.0"
        namespace: app
        entries:
          - {name: missing_dir, kind: workflow.host, store: nowhere/app.db}
          - {name: folder, kind: workflow.host, store: data}
          - {name: empty, kind: workflow.host, store: ""}
          - {name: memory, kind: workflow.host, store: ":memory:"}
          - {name: one, kind: workflow.host, store: data/one.db}
          - {name: same, kind: workflow.host, store: ./data/../data/one.db}
          - {name: fine, kind: workflow.host, store: data/two.db, synchronous: full}
          - {name: env, kind: workflow.host, store: "${DATABASE_URL}"}
          - {name: env2, kind: workflow.host, store: "$DATA/app.db"}
        """,
    )
    here = tmp_path.resolve()
    assert problems == [
        f"{path}: entry 'app:missing_dir' (index 0): field 'store': expected a file in an "
        f"existing folder, got '{here}/nowhere/app.db': '{here}/nowhere' is not a folder",
        f"{path}: entry 'app:folder' (index 1): field 'store': expected a file path, "
        f"got the folder '{here}/data'",
        f"{path}: entry 'app:empty' (index 2): field 'store': expected a file path "
        "(leave it out for an in-memory store), got ''",
        f"{path}: entry 'app:memory' (index 3): field 'store': expected a file path, not an "
        "SQLite name (leave it out for an in-memory store), got ':memory:'",
        # (it was a file named '${DATABASE_URL}' beside the config)
        f"{path}: entry 'app:env' (index 7): field 'store': expected a file path or a "
        "postgresql:// URL, got '${DATABASE_URL}': a config's values are taken as written, "
        "with no environment variable put in (leave store out and give it as the node "
        "starts: garrison run --store, or open_node(store=...))",
        f"{path}: entry 'app:env2' (index 8): field 'store': expected a file path or a "
        "postgresql:// URL, got '$DATA/app.db': a config's values are taken as written, "
        "with no environment variable put in (leave store out and give it as the node "
        "starts: garrison run --store, or open_node(store=...))",
        f"{path}: entry 'app:same' (index 5): field 'store': expected a store of its own, "
        f"but '{here}/data/one.db' is also the store of entry 'app:one'",
    ]


def test_a_store_under_the_home_folder_tilde_is_refused_as_an_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``store: "~/x.db"`` made ``$HOME/x.db`` where ``$HOME/x.db`` is refused (a
    config's values are taken as written): a ``~`` is refused alike, naming the entry.
    A file whose name begins with ``~`` is a file of that name beside the config."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    path, problems = problems_of(
        tmp_path,
        """
        version: "1.0"
        namespace: app
        entries:
          - {name: tilde, kind: workflow.host, store: "~/x.db"}
          - {name: user, kind: workflow.host, store: "~root/x.db"}
          - {name: named, kind: workflow.host, store: "~named.db"}
        """,
    )
    assert problems == [
        f"{path}: entry 'app:{name}' (index {i}): field 'store': expected a file path or a "
        f"postgresql:// URL, got {store!r}: a config's values are taken as written, with no "
        "home folder put in for '~' (write the path in full, or leave store out and give it "
        "as the node starts: garrison run --store ~/..., which the shell expands)"
        for i, (name, store) in enumerate((("tilde", "~/x.db"), ("user", "~root/x.db"))
                                          )]
    assert list(home.iterdir()) == []


def test_workflow_host_store_files_a_node_cannot_open_are_reported_creating_nothing(
        tmp_path: Path) -> None:
    """A text file, an empty file, another application's database, a store of a newer
    schema, a folder where no file can be made: "ok" from garrison check, then the
    node failed on the first naming neither entry nor file. Every one is reported in
    one pass (a store a node would create, and a good one, are not), and the check
    leaves no file behind: no lock file, no new store, no -wal or -shm."""
    import sqlite3

    from garrison.persistence import SCHEMA_VERSION, SQLiteStore

    data = tmp_path / "data"
    data.mkdir()
    (data / "text.db").write_text("not a database\n")
    (data / "empty.db").write_bytes(b"")
    other = sqlite3.connect(data / "other.db")
    other.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    other.commit()
    other.close()
    SQLiteStore(data / "newer.db").close()
    newer = sqlite3.connect(data / "newer.db")
    newer.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    newer.commit()
    newer.close()
    SQLiteStore(data / "good.db").close()
    proc = Path("/proc/self").is_dir()  # a folder that holds no files of ours
    before = sorted(p.name for p in data.iterdir())
    path, problems = problems_of(tmp_path, f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: text, kind: workflow.host, store: data/text.db}}
          - {{name: empty, kind: workflow.host, store: data/empty.db}}
          - {{name: other, kind: workflow.host, store: data/other.db}}
          - {{name: newer, kind: workflow.host, store: data/newer.db}}
          - {{name: good, kind: workflow.host, store: data/good.db}}
          - {{name: new, kind: workflow.host, store: data/new.db}}
          - {{name: proc, kind: workflow.host, store: {"/proc/nope.db" if proc else "x.db"}}}
          - {{name: wf, kind: workflow.py, source: "{MOD}:order_workflow"}}
          - {{name: tick, kind: workflow.schedule, workflow: app:wf, every: 1h,
              host: app:text, input: [1, 2, 3, 4, 5]}}
        """)
    d = data.resolve()
    prefix = f"{path}: entry 'app:"
    expected = [
        f"{prefix}text' (index 0): field 'store': cannot be opened: store '{d}/text.db': "
        "not a SQLite database, so not a garrison store (its first bytes are not SQLite's)",
        f"{prefix}empty' (index 1): field 'store': cannot be opened: store '{d}/empty.db': "
        "the file is empty (0 bytes)",
        f"{prefix}other' (index 2): field 'store': cannot be opened: store '{d}/other.db': "
        "not a garrison store: a SQLite database with other tables (orders)",
        f"{prefix}newer' (index 3): field 'store': cannot be opened: store '{d}/newer.db' "
        f"has schema version {SCHEMA_VERSION + 1}, this version of garrison knows schema "
        f"version {SCHEMA_VERSION}: it was written by a newer garrison",
    ]
    if proc:
        expected.append(f"{prefix}proc' (index 6): field 'store': cannot be opened: store "
                        "'/proc/nope.db': cannot create files in '/proc'")
    # the schedule on a host with a bad store is still checked
    expected.append(f"{prefix}tick' (index 8): field 'input'")
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert sorted(p.name for p in data.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.yaml", "data"]


def test_relative_store_is_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", """
        version: "1.0"
        namespace: app
        entries:
          - {name: w, kind: workflow.host, store: app.db}
          - {name: v, kind: workflow.host}
    """)
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/app.yaml")
    assert config["app:w"] == WorkflowHostEntry(
        id="app:w", store=str(path.parent.resolve() / "app.db"))
    assert config["app:v"] == WorkflowHostEntry(id="app:v", store=None)


def test_resolve_target_errors() -> None:
    config = load_config_text(HEAD + "  - {name: h, kind: process.host}\n")
    with pytest.raises(KeyError, match="app:nope"):
        config.resolve_target("app:nope")
    with pytest.raises(KeyError, match=r"process\.host"):
        config.resolve_target("app:h")


# --------------------------------------------------------------------------- restart policy


def test_restart_delay_really_grows_and_caps() -> None:
    policy = RestartPolicy(initial_delay="1s", max_delay="10s", backoff_factor=2.0, jitter=0)
    assert [policy.delay(n, random.Random(0)) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.base_delay(10_000) == 10.0  # no overflow
    assert RestartPolicy(max_attempts=3).allows(3)
    assert not RestartPolicy(max_attempts=3).allows(4)  # 3 restarts = at most 4 starts
    assert RestartPolicy().allows(10**9)  # 0 = unlimited


def test_restart_policy_validates_when_built_by_hand() -> None:
    with pytest.raises(ValueError, match="backoff_factor"):
        RestartPolicy(backoff_factor=0.5)
    with pytest.raises(ValueError, match="max_delay"):
        RestartPolicy(initial_delay=5, max_delay=1)
    with pytest.raises(ValueError, match="jitter"):
        RestartPolicy(jitter=1.1)


def test_stable_threshold_0_is_refused(tmp_path: Path) -> None:
    """With stable_threshold 0 every run was stable, one that failed at once included, so
    the restart count never grew and max_attempts never gave up (28 starts in 3 s, each
    'restart 1/2')."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, lifecycle: "
        "{stable_threshold: 0, restart: {max_attempts: 2}}}\n"
        "  - {name: t, kind: process.service, process: p, lifecycle: {stable_threshold: 0s}}\n"
        "  - {name: u, kind: process.service, process: p, lifecycle: {stable_threshold: 1ms}}\n",
    )
    assert problems == [
        f"{path}: entry 'app:{name}' (index {index}): field 'lifecycle.stable_threshold': "
        "expected a duration longer than 0, got 0.0" for name, index in [("s", 1), ("t", 2)]]
    with pytest.raises(ValueError, match="stable_threshold"):
        Lifecycle(stable_threshold=0)


def test_service_timeouts_over_100_years_are_refused(tmp_path: Path) -> None:
    """As a restart delay over 100 years is: ``garrison check`` said ok to them, and a
    ``stop_timeout`` of ``.inf`` or ``1e300`` then held the node's stop for ever without
    a word. A tiny one (``1e-9``) is a duration like any other (README)."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, lifecycle: "
        "{stop_timeout: 1e300, start_timeout: .inf, stable_threshold: 36501d}}\n"
        "  - {name: t, kind: process.service, process: p, lifecycle: "
        "{stop_timeout: 1.0e-9, start_timeout: 1.0e-9, stable_threshold: 36500d}}\n",
    )
    expected = "expected a duration of at most 100 years"
    assert [line.split("field ", 1)[1] for line in problems] == [
        f"'lifecycle.stop_timeout': {expected} (a stop that waits for ever may never end: "
        "the node's stop waits for it), got 1e+300",
        f"'lifecycle.start_timeout': {expected} (a start that waits for ever never fails: "
        "what requires it waits for ever), got inf",
        f"'lifecycle.stable_threshold': {expected} (a run never lasts for ever: the "
        "restart count would never reset), got 3153686400.0"], problems
    assert all(line.startswith(f"{path}: entry 'app:s'") for line in problems)
    for field in ("start_timeout", "stop_timeout", "stable_threshold"):
        with pytest.raises(ValueError, match=rf"^field '{field}': {expected} "):
            Lifecycle(**{field: float("inf")})


def test_a_rate_window_over_100_years_is_refused(tmp_path: Path) -> None:
    """A host's ``rate: "1/99999999999999999999999999s"`` was taken, while every other
    duration stops at 100 years; ``36500d`` itself is one."""
    path, problems = problems_of(
        tmp_path,
        HEAD + '  - {name: w, kind: workflow.host, rate: "1/99999999999999999999999999s"}\n'
        '  - {name: v, kind: workflow.host, rate: "1/36501d"}\n'
        '  - {name: ok, kind: workflow.host, rate: "1/36500d"}\n',
    )
    assert problems == [
        f"{path}: entry 'app:{name}' (index {index}): field 'rate': expected a rate "
        "'COUNT/DURATION' such as '100/1m' (COUNT from 1 to 2**63 - 1; DURATION at most 100 "
        f"years), got {rate!r}"
        for name, index, rate in [("w", 0, "1/99999999999999999999999999s"),
                                  ("v", 1, "1/36501d")]]
    with pytest.raises(ValueError, match=r"^invalid rate '1/36501d': the period must be at "
                                         r"most 100 years \(36500d\), as every duration$"):
        parse_rate("1/36501d")
    assert parse_rate("1/36500d") == (1, 100 * 365 * 86400.0)


def test_no_restart_delay_needs_a_limit(tmp_path: Path) -> None:
    """initial_delay 0 with unlimited restarts restarted a service that failed at once
    some 7,700 times in 2 s (23,000 log lines); with a limit it is a quick retry."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, lifecycle: "
        "{restart: {initial_delay: 0s}}}\n"
        "  - {name: t, kind: process.service, process: p, lifecycle: "
        "{restart: {initial_delay: 0, max_attempts: 0, max_delay: 0s}}}\n"
        "  - {name: u, kind: process.service, process: p, lifecycle: "
        "{restart: {initial_delay: 0s, max_attempts: 3}}}\n"
        "  - {name: v, kind: process.service, process: p, lifecycle: "
        "{restart: {initial_delay: 0s, max_attempts: many}}}\n",
    )
    assert problems == [
        f"{path}: entry 'app:{name}' (index {index}): field 'lifecycle.restart.initial_delay': "
        "expected a duration > 0 while max_attempts is 0 (unlimited): with no delay a "
        "process that fails at once would be restarted in a tight loop for ever (or give "
        "max_attempts a limit), got 0.0" for name, index in [("s", 1), ("t", 2)]
    ] + [f"{path}: entry 'app:v' (index 4): field 'lifecycle.restart.max_attempts': "
         "expected an integer >= 0, got 'many'"]
    with pytest.raises(ValueError, match="initial_delay"):
        RestartPolicy(initial_delay=0)
    assert RestartPolicy(initial_delay=0, max_attempts=1).delay(1) == 0


@given(
    attempt=st.integers(min_value=1, max_value=60),
    initial=st.floats(min_value=0.001, max_value=10),
    extra=st.floats(min_value=0, max_value=100),
    factor=st.floats(min_value=1, max_value=5),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_restart_delay_bounds(
    attempt: int, initial: float, extra: float, factor: float, jitter: float, seed: int
) -> None:
    policy = RestartPolicy(
        initial_delay=initial, max_delay=initial + extra, backoff_factor=factor, jitter=jitter
    )
    base = min(initial * factor ** (attempt - 1), initial + extra)
    assert policy.base_delay(attempt) == pytest.approx(base)
    delay = policy.delay(attempt, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    if attempt > 1:
        assert policy.base_delay(attempt) >= policy.base_delay(attempt - 1)


def test_postgresql_stores_are_checked_for_their_form_only(tmp_path: Path) -> None:
    path, problems = problems_of(
        tmp_path,
        """
        version: "1.0"
        namespace: app
        entries:
          - {name: a, kind: workflow.host, store: "postgresql://app@db.example:5432/orders"}
          - {name: b, kind: workflow.host, store: "postgresql://app@db.example/orders?schema=b"}
          - {name: same, kind: workflow.host, store: "postgres://app@DB.example:5432/orders"}
          - {name: nodb, kind: workflow.host, store: "postgresql://app@db.example"}
          - {name: port, kind: workflow.host, store: "postgresql://app@db.example:x/orders"}
          - {name: pw, kind: workflow.host, store: "postgresql://app:Tops/3cret@db.example/o"}
          - {name: pwq, kind: workflow.host, store: "postgresql://app:12?s=3@db.example/o"}
        """,
    )
    assert problems == [
        f"{path}: entry 'app:nodb' (index 3): field 'store': expected a "
        "postgresql://user@host:port/dbname URL, but it names no database",
        f"{path}: entry 'app:port' (index 4): field 'store': expected a "
        "postgresql://user@host:port/dbname URL: Port could not be cast to integer value as 'x'",
        # (a '/' in the password: urllib read 'Tops' as the port, and said so)
        f"{path}: entry 'app:pw' (index 5): field 'store': expected a "
        "postgresql://user@host:port/dbname URL: the URL has an '@' after its host part: a "
        "'/', '?' or '#' in the password must be percent-encoded (%2F, %3F, %23), an '@' in "
        "the database name as %40",
        # (a '?' after digits: urllib read a port and a query, and found no database)
        f"{path}: entry 'app:pwq' (index 6): field 'store': expected a "
        "postgresql://user@host:port/dbname URL: the URL has an '@' after its host part: a "
        "'/', '?' or '#' in the password must be percent-encoded (%2F, %3F, %23), an '@' in "
        "the database name as %40",
        f"{path}: entry 'app:same' (index 2): field 'store': expected a store of its own, but "
        "'postgres://app@DB.example:5432/orders' is also the store of entry 'app:a'",
    ]
    config = load_config_text(
        HEAD + '  - {name: w, kind: workflow.host, store: "postgresql://u@h/d", '
               "synchronous: full}\n")
    assert config["app:w"] == WorkflowHostEntry(id="app:w", store="postgresql://u@h/d",
                                                synchronous="full")


def test_a_postgresql_store_of_several_hosts_is_taken(tmp_path: Path) -> None:
    """libpq's multi-host URL (``host1:port1,host2:port2``, the usual failover setup)
    was refused with urllib's words (``Port could not be cast to integer value as
    '5432,db2.example:5433'``): it is taken, each host's port checked, and two entries
    on the same hosts are one store, in any order (``db2,db1`` was another store)."""
    path, problems = problems_of(
        tmp_path,
        """
        version: "1.0"
        namespace: app
        entries:
          - name: a
            kind: workflow.host
            store: "postgresql://app:pw@db1.example:5432,db2.example:5433/orders?target_session_attrs=read-write"
          - {name: b, kind: workflow.host, store: "postgresql://app@db1.example:5432,db2.example:5434/orders"}
          - {name: same, kind: workflow.host, store: "postgresql://app@DB1.example,db2.example:5433/orders"}
          - {name: port, kind: workflow.host, store: "postgresql://app@db1.example:5432,db2.example:y/orders"}
          - {name: swapped, kind: workflow.host, store: "postgresql://app@db2.example:5433,db1.example/orders"}
        """,
    )
    assert problems == [
        f"{path}: entry 'app:port' (index 3): field 'store': expected a "
        "postgresql://user@host:port/dbname URL: Port could not be cast to integer value as 'y'",
        f"{path}: entry 'app:same' (index 2): field 'store': expected a store of its own, but "
        "'postgresql://app@DB1.example,db2.example:5433/orders' is also the store of entry "
        "'app:a'",
        f"{path}: entry 'app:swapped' (index 4): field 'store': expected a store of its own, "
        "but 'postgresql://app@db2.example:5433,db1.example/orders' is also the store of "
        "entry 'app:a'",
    ]


def test_check_lists_every_problem_in_one_pass(tmp_path: Path) -> None:
    """What a new user hit: mistakes that check ok'd (then failed at every tick or start,
    or made an entry unreachable) and problems one bad field hid. Every one is listed,
    in one run."""
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: report, kind: workflow.py, source: "{MOD}:report"}}
          - {{name: refund, kind: workflow.py, source: "{MOD}:refund"}}
          - {{name: p, kind: process.py, source: "{MOD}:main"}}
          - {{name: "a/b", kind: process.py, source: "{MOD}:main"}}
          - {{name: "x@y", kind: process.py, source: "{MOD}:main"}}
          - {{name: "tab\\tbed", kind: process.py, source: "{MOD}:main"}}
          - {{name: arity, kind: workflow.schedule, workflow: report, every: 1h,
             input: [1, 2, 3]}}
          - {{name: typed, kind: workflow.schedule, workflow: report, every: 1h,
             input: ["abc"]}}
          - {{name: fine, kind: workflow.schedule, workflow: report, every: 1h, input: [7]}}
          - {{name: flag, kind: workflow.schedule, workflow: report, every: 1h, input: [1.5]}}
          - {{name: s4, kind: workflow.schedule, workflow: report, every: 1h,
             catchup_window: -5s, timezone: Mars/Base, overlap: maybe}}
          - {{name: svc, kind: process.service, process: p, lifecycle: {{start_timeout: 0}}}}
          - {{name: svc2, kind: process.service, process: app:missing,
             lifecycle: {{restart: {{max_attempts: -1}}}}}}
        """,
    )
    at = {i: f"{path}: entry 'app:{n}' (index {i}): " for i, n in enumerate(
        ["report", "refund", "p", "a/b", "x@y", "", "arity", "typed", "fine", "flag", "s4",
         "svc", "svc2"])}
    name_rule = "expected a non-empty name without ':', '/', '@', spaces or control characters"
    assert sorted(problems) == sorted([
        at[1] + f"field 'source': expected a workflow function, but '{MOD}:refund' is an "
        "@activity (a workflow calls it; an activity entry is kind function.py)",
        f"{path}: entry at index 3: field 'name': {name_rule}, got 'a/b'",
        f"{path}: entry at index 4: field 'name': {name_rule}, got 'x@y'",
        f"{path}: entry at index 5: field 'name': {name_rule}, got 'tab\\tbed'",
        at[6] + "field 'input': the input [1, 2, 3] does not fit app:report (n: int = 0) -> "
        "int: too many positional arguments; expected a list of its positional arguments",
        at[7] + "field 'input': the input ['abc'] does not fit app:report (n: int = 0) -> "
        f"int: cannot restore argument 1 (n) of workflow {MOD}:report as int: expected an "
        "integer, got a string \"abc\"",
        at[9] + "field 'input': the input [1.5] does not fit app:report (n: int = 0) -> "
        f"int: cannot restore argument 1 (n) of workflow {MOD}:report as int: expected an "
        "integer, got a number 1.5",
        at[10] + "field 'catchup_window': expected a duration that is not negative, such "
        "as 10, '250ms', '30s', '5m' or '1h30m', got '-5s'",
        at[10] + "field 'timezone': expected an IANA time zone name such as 'UTC' or "
        "'Europe/Riga', got 'Mars/Base'",
        at[10] + "field 'overlap': expected one of 'skip', 'buffer_one', 'allow_all', got "
        "'maybe'",
        at[11] + "field 'lifecycle.start_timeout': expected a duration longer than 0, got 0.0",
        at[12] + "field 'lifecycle.restart.max_attempts': expected an integer >= 0, got -1",
        at[12] + "field 'process': unknown entry 'app:missing' (expected a process.py or "
        "workflow.py entry)",
    ]), "\n".join(problems)


def test_a_field_that_cannot_be_read_hides_no_other_and_invents_none(tmp_path: Path) -> None:
    """A field that fails to structure stands in at its default only to check the others:
    no made-up problem comes from the stand-in (max_delay against a default
    initial_delay; a schedule whose every failed is not 'neither cron nor every')."""
    _, problems = problems_of(
        tmp_path,
        HEAD + PROC + "  - {name: s, kind: process.service, process: p, lifecycle: {restart: "
        "{initial_delay: soon, max_delay: 500ms, jitter: 2}}}\n"
        f'  - {{name: w, kind: workflow.py, source: "{MOD}:report"}}\n'
        "  - {name: t, kind: workflow.schedule, workflow: w, every: often, overlap: never}\n",
    )
    fields = sorted(line.split("field ")[1].split(":")[0] for line in problems)
    assert fields == ["'every'", "'lifecycle.restart.initial_delay'",
                      "'lifecycle.restart.jitter'", "'overlap'"], problems


def test_a_service_runs_a_process_on_a_process_host_and_a_workflow_on_a_workflow_host(
        tmp_path: Path) -> None:
    """Each kind of entry on the other kind of host passed check: a workflow.py on the
    default process host crash-looped (NotInProcess at its first workflow.sleep); a
    process.py on a workflow host ran unjournaled and took its whole stop_timeout to
    stop. Both are refused, on 'host', whether it is given or left out."""
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: p, kind: process.py, source: "{MOD}:main"}}
          - {{name: wf, kind: workflow.py, source: "{MOD}:report"}}
          - {{name: pool, kind: process.host}}
          - {{name: durable, kind: workflow.host}}
          - {{name: wf_default, kind: process.service, process: wf}}
          - {{name: wf_pool, kind: process.service, process: wf, host: pool}}
          - {{name: p_builtin, kind: process.service, process: p, host: workflows}}
          - {{name: p_durable, kind: process.service, process: app:p, host: app:durable}}
          - {{name: fine_p, kind: process.service, process: p, host: pool}}
          - {{name: fine_wf, kind: process.service, process: wf, host: durable}}
          - {{name: fine_wf2, kind: process.service, process: wf, host: workflows}}
        """,
    )
    at = {i: f"{path}: entry 'app:{n}' (index {i}): field 'host': " for i, n in
          [(4, "wf_default"), (5, "wf_pool"), (6, "p_builtin"), (7, "p_durable")]}
    on_process = ("expected a workflow host (workflows or a workflow.host entry) for the "
                  "workflow.py entry 'app:wf', got the process host ")
    on_workflow = ("expected a process host (processes or a process.host entry) for the "
                   "process.py entry 'app:p', got the workflow host {}; to run as a durable "
                   "workflow, make it a workflow.py entry")
    assert problems == [
        at[4] + on_process + "'processes' (the default when 'host' is left out)",
        at[5] + on_process + "'app:pool'",
        at[6] + on_workflow.format("'workflows'"),
        at[7] + on_workflow.format("'app:durable'"),
    ], "\n".join(problems)


def test_a_service_input_that_cannot_start_its_process_is_a_config_error(
        tmp_path: Path) -> None:
    """A service's ``input`` is checked against its process's signature, as a schedule's
    is (a new user's ``input: [1, 2, 3]`` passed check, then the service crashed with a
    TypeError at every start, restarting forever): the number of arguments always, the
    values against their annotations when it runs on a workflow host."""
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: session, kind: process.py, source: "{MOD}:session"}}
          - {{name: report, kind: workflow.py, source: "{MOD}:report"}}
          - {{name: many, kind: process.service, process: session, input: [1, 2, 3]}}
          - {{name: none, kind: process.service, process: session}}
          - {{name: one, kind: process.service, process: session, input: ["ann"]}}
          - {{name: scalar, kind: process.service, process: session, input: ann}}
          - {{name: untyped, kind: process.service, process: session, input: [5]}}
          - {{name: typed, kind: process.service, process: report, host: workflows,
             input: ["abc"]}}
          - {{name: fine, kind: process.service, process: report, host: workflows,
             input: [7]}}
        """,
    )
    at = {i: f"{path}: entry 'app:{n}' (index {i}): field 'input': " for i, n in
          enumerate(["session", "report", "many", "none", "one", "scalar", "untyped",
                     "typed", "fine"])}
    assert problems == [
        at[2] + "the input [1, 2, 3] does not fit app:session (user: str) -> None: too "
        "many positional arguments; expected a list of its positional arguments",
        at[3] + "the input [] does not fit app:session (user: str) -> None: missing a "
        "required argument: 'user'; expected a list of its positional arguments",
        at[7] + "the input ['abc'] does not fit app:report (n: int = 0) -> int: cannot "
        f"restore argument 1 (n) of workflow {MOD}:report as int: expected an integer, got "
        "a string \"abc\"",
    ], "\n".join(problems)


def test_a_yaml_number_with_an_exponent_is_a_float(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML's) reads ``1e-3`` as a string: a float input got "1e-3", which
    the strict scalar check then refused ("got a string"); read as YAML 1.2 and JSON
    do (found by an adversarial review)."""
    path = write(tmp_path, f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: alert, kind: workflow.py, source: "{MOD}:alert"}}
          - {{name: low, kind: workflow.schedule, workflow: alert, every: 1h,
             input: [1e-3]}}
          - {{name: high, kind: workflow.schedule, workflow: alert, every: 1h,
             input: [2E10]}}
    """)
    assert check_config(path) == []
    config = load_config(path)
    assert config.entries["app:low"].input == (0.001,)
    assert config.entries["app:high"].input == (2e10,)


def test_an_input_the_store_cannot_hold_is_a_config_error(tmp_path: Path) -> None:
    """A schedule's input, and a workflow service's, is stored as JSON: an unquoted YAML
    date (a datetime.date), bytes (!!binary), a set (!!set) or a mapping with int keys
    passed check, then the node died at start with a PayloadError traceback (schedule)
    or the service failed at every start and gave up. Each is a config error naming the
    file, entry, field and the value's type; a plain process service gets its input as
    it is (never stored), so a date is fine there."""
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: wf, kind: workflow.py, source: "{MOD}:order_workflow"}}
          - {{name: p, kind: process.py, source: "{MOD}:main"}}
          - {{name: nightly, kind: workflow.schedule, workflow: wf, every: 1h,
             input: [2024-01-01]}}
          - {{name: s_date, kind: process.service, process: wf, host: workflows,
             input: [2024-01-01]}}
          - {{name: s_bytes, kind: process.service, process: wf, host: workflows,
             input: [!!binary aGVsbG8=]}}
          - {{name: s_set, kind: process.service, process: wf, host: workflows,
             input: [!!set {{a}}]}}
          - {{name: s_keys, kind: process.service, process: wf, host: workflows,
             input: [{{1: 2}}]}}
          - {{name: plain, kind: process.service, process: p, input: [2024-01-01]}}
          - {{name: zoned, kind: workflow.schedule, workflow: wf, every: 1h,
             input: [2024-01-01T00:00:00Z]}}
        """,
    )
    at = {i: f"{path}: entry 'app:{n}' (index {i}): field 'input': cannot store the input "
          for i, n in [(2, "nightly"), (3, "s_date"), (4, "s_bytes"), (5, "s_set"),
                       (6, "s_keys")]}
    durable = ("cannot be converted to JSON: only builtins (dict with str keys, list, tuple, "
               "str, int, float, bool, None), attrs classes, dataclasses, enums, "
               "datetimes, uuid.UUID and Pid are durable")
    date_hint = ("; YAML reads an unquoted date as a date: quote it ('2024-01-01') to pass "
                 "a string, or give a time with its zone (2024-01-01T00:00:00Z)")
    assert problems == [
        at[2] + "[datetime.date(2024, 1, 1)] for app:wf: a value of type datetime.date "
        "at [0] " + durable + date_hint,
        at[3] + "[datetime.date(2024, 1, 1)] for app:wf: a value of type datetime.date "
        "at [0] " + durable + date_hint,
        at[4] + "[b'hello'] for app:wf: a value of type bytes at [0] " + durable,
        at[5] + "[{'a'}] for app:wf: a value of type set at [0] " + durable,
        at[6] + "[{1: 2}] for app:wf: a value of type int at [0] (a key of the dict there) "
        "cannot be "
        "converted to JSON: JSON object keys must be str",
    ], "\n".join(problems)


def test_a_plain_process_service_gets_a_yaml_date_as_it_is(tmp_path: Path) -> None:
    """A process service's input is passed to its process as the YAML gave it (nothing
    stores it): a date loads (only a durable entry's input must be JSON)."""
    import datetime

    config = load_config(write(tmp_path, HEAD + PROC + "  - {name: s, kind: process.service, "
                               "process: p, input: [2024-01-01]}\n"))
    service = config["app:s"]
    assert isinstance(service, ServiceEntry)
    assert service.input == (datetime.date(2024, 1, 1),)


def _folder_app(folder: Path, namespace: str, module: str, says: str) -> Path:
    """``folder/app.yaml`` with a process.py entry ``h`` whose source is ``module:main``
    (``folder/module.py``, whose ``main`` returns ``says``)."""
    folder.mkdir()
    (folder / f"{module}.py").write_text(f"async def main():\n    return {says!r}\n")
    return write(folder, f'version: "1.0"\nnamespace: {namespace}\nentries:\n'
                         f'  - {{name: h, kind: process.py, source: "{module}:main"}}\n')


@pytest.fixture
def fresh_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Module names a test imports (dropped after it), with ``sys.path`` restored."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


def test_two_config_folders_with_a_module_of_one_name_are_refused(
        tmp_path: Path, fresh_imports: list[str]) -> None:
    """Two config folders, each with its own ``handlers.py`` and ``source:
    "handlers:main"``: both entries silently ran the last folder's module (every folder
    went to the front of sys.path before any import, and Python keeps one module per
    name). Each file's sources are looked up in its own folder first, and a name
    another folder's module holds already is refused, naming both files."""
    module = f"handlers_{tmp_path.name.replace('-', '_')}"
    fresh_imports.append(module)
    a = _folder_app(tmp_path / "a", "a", module, "from A")
    b = _folder_app(tmp_path / "b", "b", module, "from B")
    with pytest.raises(ConfigError) as info:
        load_configs([a, b])
    assert info.value.problems == [
        f"{b}: entry 'b:h' (index 0): field 'source': module {module!r} is "
        f"{str(tmp_path / 'b' / module) + '.py'!r} (in the config file's folder), but a "
        f"module named {module!r} is already imported from "
        f"{str(tmp_path / 'a' / module) + '.py'!r}: Python holds one module per name (and a "
        "workflow is found again by its module:function name), so one of them would run in "
        "place of the other; give the modules distinct names or put each in a package of a "
        "distinct name"]
    assert sys.modules[module].__file__ == str(tmp_path / "a" / f"{module}.py")
    # the same file loaded again finds its own module, imported already: no problem
    assert load_configs([a]).resolve_target("a:h") is sys.modules[module].main


def test_a_config_module_named_as_one_the_app_imported_is_refused(
        tmp_path: Path, fresh_imports: list[str]) -> None:
    """An application that imported its own ``handlers`` and then loads a config whose
    folder has another ``handlers.py`` silently ran its own module for the entry."""
    module = f"handlers_{tmp_path.name.replace('-', '_')}"
    fresh_imports.append(module)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / f"{module}.py").write_text("async def main():\n    return 'app'\n")
    sys.path.insert(0, str(tmp_path / "app"))
    __import__(module)
    cfg = _folder_app(tmp_path / "cfg", "a", module, "from the config's folder")
    problems = check_config(cfg)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{cfg}: entry 'a:h' (index 0): field 'source': module "
                                  f"{module!r} is {str(tmp_path / 'cfg' / module) + '.py'!r}")
    assert f"already imported from {str(tmp_path / 'app' / module) + '.py'!r}" in problems[0]


def test_a_config_folder_is_searched_before_another_folder_on_the_path(
        tmp_path: Path, fresh_imports: list[str]) -> None:
    """Of two config files, the first one's source is found in its own folder, not in
    the second one's (put at the front of sys.path after it), and a module only the
    second folder has is found there as before."""
    module = f"handlers_{tmp_path.name.replace('-', '_')}"
    other = f"other_{tmp_path.name.replace('-', '_')}"
    fresh_imports.extend([module, other])
    a = _folder_app(tmp_path / "a", "a", module, "from A")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"{module}.py").write_text("async def main():\n    return 'B'\n")
    (tmp_path / "b" / f"{other}.py").write_text("async def main():\n    return 'B'\n")
    b = write(tmp_path / "b", f'version: "1.0"\nnamespace: b\nentries:\n'
                              f'  - {{name: o, kind: process.py, source: "{other}:main"}}\n')
    config = load_configs([a, b])
    assert sys.modules[module].__file__ == str(tmp_path / "a" / f"{module}.py")
    assert config.resolve_target("a:h") is sys.modules[module].main
    assert sys.modules[other].__file__ == str(tmp_path / "b" / f"{other}.py")


def test_a_byte_identical_copy_of_an_imported_module_is_used_as_it_is(
        tmp_path: Path, fresh_imports: list[str]) -> None:
    """A user's tests each copy one deploy folder (config + handlers.py) into their own
    tmp_path and load it: the second copy was refused, its module name being imported
    already from the first copy. The same bytes are the same code: the module imported
    already is used (a copy whose code differs is still refused)."""
    module = f"handlers_{tmp_path.name.replace('-', '_')}"
    fresh_imports.append(module)
    one = _folder_app(tmp_path / "one", "app", module, "hi")
    two = _folder_app(tmp_path / "two", "app", module, "hi")
    assert load_configs([one]).resolve_target("app:h") is sys.modules[module].main
    assert load_configs([two]).resolve_target("app:h") is sys.modules[module].main
    assert sys.modules[module].__file__ == str(tmp_path / "one" / f"{module}.py")
    (tmp_path / "two" / f"{module}.py").write_text("async def main():\n    return 'hi!'\n")
    problems = check_config(two)
    assert len(problems) == 1 and "is already imported from" in problems[0], problems


def test_a_package_copy_is_reused_only_if_the_named_module_is_the_same_too(
        tmp_path: Path, fresh_imports: list[str]) -> None:
    """``source: "pkg.jobs:main"`` in two folders whose ``pkg/__init__.py`` are alike
    (both empty) but whose ``jobs.py`` differ: the second is refused, naming the module
    the package imported already would use; identical ``jobs.py`` copies load."""
    pkg = f"pkg_{tmp_path.name.replace('-', '_')}"
    fresh_imports.extend([pkg, f"{pkg}.jobs"])

    def folder(name: str, says: str) -> Path:
        (tmp_path / name / pkg).mkdir(parents=True)
        (tmp_path / name / pkg / "__init__.py").write_text("")
        (tmp_path / name / pkg / "jobs.py").write_text(
            f"async def main():\n    return {says!r}\n")
        return write(tmp_path / name, f'version: "1.0"\nnamespace: {name}\nentries:\n'
                                      f'  - {{name: h, kind: process.py, source: '
                                      f'"{pkg}.jobs:main"}}\n')

    a, same, other = folder("a", "A"), folder("same", "A"), folder("b", "B")
    load_configs([a])
    assert load_configs([same]).resolve_target("same:h") is sys.modules[f"{pkg}.jobs"].main
    problems = check_config(other)
    assert problems == [
        f"{other}: entry 'b:h' (index 0): field 'source': module '{pkg}.jobs' is "
        f"{str(tmp_path / 'b' / pkg / 'jobs.py')!r} (in the config file's folder), but a "
        f"module named '{pkg}.jobs' is already imported from "
        f"{str(tmp_path / 'a' / pkg / 'jobs.py')!r}: Python holds one module per name (and "
        "a workflow is found again by its module:function name), so one of them would run "
        "in place of the other; give the modules distinct names or put each in a package "
        "of a distinct name"]
    # not imported yet: the package imported already would import the first folder's
    del sys.modules[f"{pkg}.jobs"]
    problems = check_config(other)
    assert len(problems) == 1, problems
    assert (f"module '{pkg}.jobs' is {str(tmp_path / 'b' / pkg / 'jobs.py')!r} (in the "
            f"config file's folder), but the package {pkg!r} imported already (from "
            f"{str(tmp_path / 'a' / pkg / '__init__.py')!r}) would import it from "
            f"{str(tmp_path / 'a' / pkg / 'jobs.py')!r}: ") in problems[0], problems


def test_a_clash_with_a_module_that_has_no_file_names_what_it_is(
        tmp_path: Path, fresh_imports: list[str]) -> None:
    """A module name imported already as a namespace package, or made in code, was said
    to be imported "from Python itself (a built-in module)": the message names the
    namespace package's folders, or says the module has no file."""
    import types

    ns = f"plugins_{tmp_path.name.replace('-', '_')}"
    made = f"made_{tmp_path.name.replace('-', '_')}"
    fresh_imports.extend([ns, made])
    (tmp_path / "elsewhere" / ns).mkdir(parents=True)
    sys.path.append(str(tmp_path / "elsewhere"))
    __import__(ns)  # a folder without __init__.py: a namespace package
    sys.modules[made] = types.ModuleType(made)
    cfg = tmp_path / "cfg"
    (cfg / ns).mkdir(parents=True)
    (cfg / ns / "__init__.py").write_text("async def main():\n    pass\n")
    (cfg / f"{made}.py").write_text("async def main():\n    pass\n")
    path = write(cfg, 'version: "1.0"\nnamespace: app\nentries:\n'
                      f'  - {{name: n, kind: process.py, source: "{ns}:main"}}\n'
                      f'  - {{name: m, kind: process.py, source: "{made}:main"}}\n')
    problems = check_config(path)
    assert len(problems) == 2, problems
    assert (f"module {ns!r} is {str(cfg / ns / '__init__.py')!r} (in the config file's "
            f"folder), but a module named {ns!r} is already imported as a namespace package "
            f"(no __init__.py) from {str(tmp_path / 'elsewhere' / ns)!r}: ") in problems[0]
    assert (f"module {made!r} is {str(cfg / made) + '.py'!r} (in the config file's "
            f"folder), but a module named {made!r} is already imported as a module with no "
            "file (built in, or made in code): ") in problems[1]
    assert "built-in module" not in "\n".join(problems)


@pytest.mark.parametrize("config, got", [({"version": "1.0"}, "got dict"), (123, "got int"),
                                         (["app.yaml", 5], "got a list holding int")])
def test_a_config_of_the_wrong_type_is_named(config: Any, got: str) -> None:
    """``config=`` given a dict (the YAML's content) or a number: a TypeError naming
    ``config=`` and what it takes, as ``store=123`` gets, not os.fspath's bare one."""
    import garrison

    async def main() -> None:
        pass

    with pytest.raises(TypeError) as err:
        garrison.run(main, config=config)
    assert str(err.value).startswith("config= expects None, a config file path, a list of "
                                     "paths or a Config"), err.value
    assert str(err.value).endswith(got)


def test_the_readme_reference_config_passes_check(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """README's reference config (the first YAML block of "Config and services"), with
    stub modules for its sources, passes ``garrison check``: as written it required an
    entry it never declared (``unknown entry 'app:other'``)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("\n## Config and services\n"):]
    block = section[section.index("```yaml\n") + 8:]
    block = block[:block.index("```\n")]
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sessions.py").write_text("async def main(name: str) -> None:\n    pass\n")
    (package / "orders.py").write_text(
        "async def order_workflow(order: dict) -> str:\n    return 'ok'\n")
    (package / "payments.py").write_text("async def charge(amount: int) -> str:\n"
                                         "    return 'paid'\n")
    config = tmp_path / "app.yaml"
    config.write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert check_config(config) == []
    finally:
        for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
            del sys.modules[name]


def test_a_typo_of_a_field_is_one_problem_with_what_was_meant(tmp_path: Path) -> None:
    """A new user's ``evry: 10s`` gave "unknown field" AND "give either cron or every,
    not neither", a consequence of the typo read as a second mistake, and no word of
    what was meant. One problem per typo now, with the field it is close to, in every
    part of a config (top level, entry, nested block, kind, a required field)."""
    path, problems = problems_of(tmp_path, f"""\
        version: "1.0"
        namespace: app
        entires: []
        entries:
          - {{name: job, kind: workflow.py, sorce: "{MOD}:order_workflow"}}
          - {{name: wf, kind: workflow.py, source: "{MOD}:order_workflow"}}
          - {{name: tick, kind: workflow.schedule, workflow: app:wf, evry: 10s}}
          - {{name: svc, kind: process.service, process: app:wf, lifecycle: {{auto_strat: true}}}}
          - {{name: h, kidn: process.host}}
          - {{name: h2, kind: proces.host}}
          - {{name: both, kind: workflow.schedule, workflow: app:wf, every: 1h, evry: 10s}}
        """)
    assert problems[0] == (f"{path}: unknown top-level field 'entires'; did you mean "
                           "'entries'? allowed fields are: version, namespace, entries, meta")
    text = "\n".join(problems)
    assert "field 'sorce': unknown field; did you mean 'source'? allowed fields" in text
    assert "field 'source'" not in text  # (its "required field is missing" said it twice)
    assert "field 'evry': unknown field; did you mean 'every'? allowed fields" in text
    assert "neither" not in text
    assert ("field 'lifecycle.auto_strat': unknown field; did you mean 'auto_start'? "
            "allowed fields") in text
    assert ("entry 'app:h' (index 4): field 'kind': required field is missing (is 'kidn' "
            "a typo of it?)") in text
    assert "unknown kind 'proces.host'; did you mean 'process.host'? known kinds" in text
    # a typo beside the field given right: that field is checked as usual
    assert "entry 'app:both' (index 6): field 'evry': unknown field; did you mean" in text
    assert sum("'app:both'" in p for p in problems) == 1
    # nothing close: no guess
    _, problems = problems_of(tmp_path, """\
        version: "1.0"
        namespace: app
        entries:
          - {name: h, kind: process.host, colour_scheme: dark}
        """)
    assert problems[0].endswith("field 'colour_scheme': unknown field; allowed fields are: "
                                "name, kind, workers, meta")


def test_a_typo_of_an_entry_id_or_of_a_source_s_function_says_what_was_meant(
        tmp_path: Path) -> None:
    """A new user's ``process: app:handlr`` said only ``unknown entry 'app:handlr'``,
    and ``source: "myapp.sessions:mian"`` only ``has no attribute 'mian'``: each names
    what it is close to now (an entry of the kind the field takes; a name the module
    has), with the config's rule of a "did you mean"."""
    path, problems = problems_of(tmp_path, f"""\
        version: "1.0"
        namespace: app
        entries:
          - {{name: handler, kind: process.py, source: "{MOD}:main"}}
          - {{name: report, kind: workflow.py, source: "{MOD}:order_workflow"}}
          - {{name: cache, kind: process.service, process: app:handler}}
          - {{name: a, kind: process.service, process: app:handlr}}
          - {{name: b, kind: process.service, process: handlr,
             lifecycle: {{requires: [cahce]}}}}
          - {{name: c, kind: process.py, source: "{MOD}:mian"}}
          - {{name: d, kind: workflow.schedule, workflow: app:reprt, every: 1h}}
          - {{name: e, kind: process.service, process: app:zzz}}
        """)
    assert problems == [
        f"{path}: entry 'app:c' (index 5): field 'source': module '{MOD}' has no attribute "
        "'mian'; did you mean 'main'?",
        f"{path}: entry 'app:a' (index 3): field 'process': unknown entry 'app:handlr' "
        "(expected a process.py or workflow.py entry); did you mean 'app:handler'?",
        f"{path}: entry 'app:b' (index 4): field 'process': unknown entry 'app:handlr' "
        "(expected a process.py or workflow.py entry); did you mean 'app:handler'?",
        f"{path}: entry 'app:b' (index 4): field 'lifecycle.requires': unknown entry "
        "'app:cahce' (expected a process.service); did you mean 'app:cache'?",
        f"{path}: entry 'app:d' (index 6): field 'workflow': unknown entry 'app:reprt' "
        "(expected a workflow.py entry); did you mean 'app:report'?",
        f"{path}: entry 'app:e' (index 7): field 'process': unknown entry 'app:zzz' "
        "(expected a process.py or workflow.py entry)",
    ]


def test_a_module_function_where_an_entry_id_goes_says_to_add_an_entry(
        tmp_path: Path) -> None:
    """``process: "myapp.sessions:main"`` (the source, written where the service names
    an entry) said only ``unknown entry``: it says that an entry id goes there, and
    how to make the entry (or which entry has that source already)."""
    path, problems = problems_of(tmp_path, f"""\
        version: "1.0"
        namespace: app
        entries:
          - {{name: handler, kind: process.py, source: "{MOD}:main"}}
          - {{name: a, kind: process.service, process: "{MOD}:main"}}
          - {{name: b, kind: process.service, process: "{MOD}:other"}}
          - {{name: c, kind: workflow.schedule, workflow: "{MOD}:order_workflow", every: 1h}}
        """)
    assert problems == [
        f"{path}: entry 'app:a' (index 1): field 'process': unknown entry '{MOD}:main' "
        "(expected a process.py or workflow.py entry); did you mean 'app:handler'? (its "
        f"source is '{MOD}:main': 'process' takes an entry id, namespace:name)",
        f"{path}: entry 'app:b' (index 2): field 'process': unknown entry '{MOD}:other' "
        "(expected a process.py or workflow.py entry): 'process' takes an entry id, "
        f"namespace:name, and this config has no namespace '{MOD}'; to run the function "
        f"'{MOD}:other', add an entry {{name: other, kind: process.py, source: "
        f"\"{MOD}:other\"}} and write process: app:other",
        f"{path}: entry 'app:c' (index 3): field 'workflow': unknown entry "
        f"'{MOD}:order_workflow' (expected a workflow.py entry): 'workflow' takes an entry "
        f"id, namespace:name, and this config has no namespace '{MOD}'; to run the function "
        f"'{MOD}:order_workflow', add an entry {{name: order_workflow, kind: workflow.py, "
        f"source: \"{MOD}:order_workflow\"}} and write workflow: app:order_workflow",
    ]


def test_a_lifecycle_field_outside_its_block_says_where_it_belongs(tmp_path: Path) -> None:
    """``lifecycle:`` left empty with ``auto_start: true`` dedented under it gave two
    problems, ``expected a mapping, got None`` and ``unknown field`` for auto_start,
    and no word that it belongs under lifecycle: the unknown field says so now."""
    path, problems = problems_of(tmp_path, f"""\
        version: "1.0"
        namespace: app
        entries:
          - {{name: handler, kind: process.py, source: "{MOD}:main"}}
          - name: s
            kind: process.service
            process: app:handler
            lifecycle:
            auto_start: true
            restart: {{max_attempts: 3}}
          - {{name: t, kind: process.service, process: app:handler, requires: [app:s]}}
        """)
    assert problems == [
        f"{path}: entry 'app:s' (index 1): field 'lifecycle': expected a mapping, got None",
        f"{path}: entry 'app:s' (index 1): field 'auto_start': unknown field (a field of "
        "'lifecycle', which is empty here: indent it under 'lifecycle:'); allowed fields "
        "are: name, kind, process, host, input, lifecycle, meta",
        f"{path}: entry 'app:s' (index 1): field 'restart': unknown field (a field of "
        "'lifecycle', which is empty here: indent it under 'lifecycle:'); allowed fields "
        "are: name, kind, process, host, input, lifecycle, meta",
        f"{path}: entry 'app:t' (index 2): field 'requires': unknown field (a field of "
        "'lifecycle': write it under 'lifecycle:'); allowed fields are: name, kind, "
        "process, host, input, lifecycle, meta",
    ]


def test_entries_written_as_a_mapping_are_said_with_their_line(tmp_path: Path) -> None:
    """``entries:`` written as a mapping of names was reported with no line (every
    other YAML-shape problem has one): its line now, and that each entry is a list
    item."""
    path, problems = problems_of(tmp_path, f"""\
        version: "1.0"
        namespace: app

        entries:
          handler: {{kind: process.py, source: "{MOD}:main"}}
        """)
    assert problems == [
        f"{path}: field 'entries' (line 4): expected a list of entries, got {{'handler': "
        f"{{'kind': 'process.py', 'source': '{MOD}:main'}}}} (a mapping: write each entry "
        "as an item of a list, '- {name: handler, kind: ...}')"]
    _, problems = problems_of(tmp_path, 'version: "1.0"\nnamespace: app\nentries: 5\n')
    assert problems[0].endswith("field 'entries' (line 3): expected a list of entries, "
                                "got 5")


def test_a_list_where_a_config_path_goes_says_which_call_takes_several() -> None:
    """helper-221: `open_node(config=)` takes a list, so a newcomer passes one to
    load_config and check_config too: a bare TypeError from os.fspath, deep inside."""
    from garrison.config import load_configs

    for call in (lambda: load_config(["a.yaml", "b.yaml"]),
                 lambda: check_config(["a.yaml"])):
        with pytest.raises(TypeError, match=r"^a config path must be a str or os\.PathLike, "
                           r"got list \['a\.yaml'.*\(several files: load_configs\(\[a, b\]\) "
                           r"or check_config\(a, b\)\)$"):
            call()
    with pytest.raises(TypeError, match=r"^load_configs\('a\.yaml'\): expected a list of "
                       r"config paths; for one file, load_config\(path\)$"):
        load_configs("a.yaml")


def test_an_entry_s_field_problems_come_in_the_file_s_order(tmp_path: Path) -> None:
    """README: an entry's own field problems come in the file's order. Those of one
    block came as cattrs found them: a field that cannot be read (a negative duration)
    before one that fails its check (``start_timeout: 0``), and unknown fields last."""
    _, problems = problems_of(tmp_path, HEAD + PROC + (
        "  - {name: s, kind: process.service, colour: red, process: p, lifecycle: "
        "{start_timeout: 0, stop_timeout: -1s, bogus: 1, restart: {max_attempts: -1, "
        "extra: 2, initial_delay: -1s}, auto_start: 3}}\n"))
    assert [line.split("field '")[1].split("'")[0] for line in problems] == [
        "colour", "lifecycle.start_timeout", "lifecycle.stop_timeout", "lifecycle.bogus",
        "lifecycle.restart.max_attempts", "lifecycle.restart.extra",
        "lifecycle.restart.initial_delay", "lifecycle.auto_start"], problems


def test_an_input_that_is_the_one_list_argument_unwrapped_says_how_to_write_it(
        tmp_path: Path) -> None:
    """A schedule of a workflow taking one list, `input: ["ann", "bob"]`: refused as
    too many arguments, 'expected a list of its positional arguments', which the input
    is; README's [[...]] was not named, so a user porting a schedule did not see what
    to write. A list that would not fit as the one argument either gets no such hint."""
    path, problems = problems_of(
        tmp_path,
        f"""
        version: "1.0"
        namespace: app
        entries:
          - {{name: greet, kind: workflow.py, source: "{MOD}:greet_all"}}
          - {{name: s, kind: workflow.schedule, workflow: greet, every: 1h,
             input: ["ann", "bob"]}}
          - {{name: t, kind: workflow.schedule, workflow: greet, every: 1h, input: [1, 2]}}
        """,
    )
    head = "does not fit app:greet (names: list[str]) -> list[str]: too many positional " \
           "arguments; expected a list of its positional arguments"
    assert problems == [
        f"{path}: entry 'app:s' (index 1): field 'input': the input ['ann', 'bob'] {head} "
        "(to give ['ann', 'bob'] as its one argument, write input: [['ann', 'bob']])",
        f"{path}: entry 'app:t' (index 2): field 'input': the input [1, 2] {head}",
    ], "\n".join(problems)


def test_a_field_of_the_wrong_type_says_the_form_it_takes(tmp_path: Path) -> None:
    """``rate: 10`` (a number where "100/1m" is wanted) said only ``expected a string``,
    ``max_concurrent: "5"`` only ``expected an integer``: what the field takes was said
    only of a value of the right type out of its range. A value of the wrong type now
    says the field's form, as one out of range does; so do the text fields looked up
    later (``store``, ``source``, ``process``, ``workflow``, ``host``)."""
    path, problems = problems_of(
        tmp_path,
        HEAD + PROC
        + f'  - {{name: w, kind: workflow.py, source: "{MOD}:order_workflow"}}\n'
        '  - {name: h, kind: workflow.host, rate: 10, max_concurrent: "5", '
        'cluster_max_concurrent: "2", synchronous: 1}\n'
        '  - {name: pool, kind: process.host, workers: "4"}\n'
        '  - {name: s, kind: process.service, process: p, lifecycle: {restart: '
        '{max_attempts: "3", backoff_factor: "2", jitter: "0.1"}}}\n'
        '  - {name: t, kind: workflow.schedule, workflow: w, cron: 5, timezone: 3, '
        'overlap: 1}\n'
        '  - {name: x, kind: workflow.host, store: 5}\n'
        '  - {name: y, kind: process.py, source: 7}\n'
        '  - {name: z, kind: process.service, process: 8, host: 9}\n'
        '  - {name: u, kind: workflow.schedule, workflow: 10, every: 1h}\n',
    )
    at = [f"{path}: entry 'app:{name}' (index {index}): field " for name, index in
          [("h", 2), ("pool", 3), ("s", 4), ("t", 5)]]
    assert problems == [
        at[0] + "'rate': expected a rate 'COUNT/DURATION' such as '100/1m' (COUNT from 1 "
        "to 2**63 - 1; DURATION at most 100 years), got 10",
        at[0] + "'max_concurrent': expected an integer from 1 to 2**63 - 1, got '5'",
        at[0] + "'cluster_max_concurrent': expected an integer from 1 to 2**63 - 1, got '2'",
        at[0] + "'synchronous': expected one of 'normal', 'full', got 1",
        at[1] + "'workers': expected an integer >= 1, got '4'",
        at[2] + "'lifecycle.restart.max_attempts': expected an integer >= 0, got '3'",
        at[2] + "'lifecycle.restart.backoff_factor': expected a number >= 1, got '2'",
        at[2] + "'lifecycle.restart.jitter': expected a number between 0 and 1, got '0.1'",
        at[3] + "'cron': expected a cron expression such as '0 3 * * *', got 5",
        at[3] + "'timezone': expected an IANA time zone name such as 'UTC' or "
        "'Europe/Riga', got 3",
        at[3] + "'overlap': expected one of 'skip', 'buffer_one', 'allow_all', got 1",
        f"{path}: entry 'app:x' (index 6): field 'store': expected a file path or a "
        "postgresql:// URL, got 5",
        f"{path}: entry 'app:y' (index 7): field 'source': expected 'module:function' "
        "(e.g. 'myapp.jobs:main'), got 7",
        f"{path}: entry 'app:z' (index 8): field 'process': expected the id of a "
        "process.py or workflow.py entry (e.g. 'app:handler'), got 8",
        f"{path}: entry 'app:z' (index 8): field 'host': expected a host entry id or "
        "'processes' / 'workflows', got 9",
        f"{path}: entry 'app:u' (index 9): field 'workflow': expected the id of a "
        "workflow.py entry (e.g. 'app:report'), got 10",
    ]
