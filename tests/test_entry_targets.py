"""A spawn target named by its config entry id, as a new user following README met it:
an entry's kind says what it runs as (API.md: a ``process.py`` entry is a process, a
``function.py`` entry an activity), and an id no entry has is one error, with the
id that was most likely meant, whichever way it was spawned."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio.testing

import garrison
from garrison.config import load_config_text
from garrison.supervision import ChildSpec, Supervisor

MOD = "config_fixtures.app_mod"

CONFIG = f"""
version: "1.0"
namespace: app
entries:
  - {{name: handler, kind: process.py, source: "{MOD}:main"}}
  - {{name: node, kind: process.py, source: "{MOD}:other"}}
  - {{name: order, kind: workflow.py, source: "{MOD}:order_workflow"}}
  - {{name: acharge, kind: function.py, source: "{MOD}:async_charge"}}
  - {{name: charge, kind: function.py, source: "{MOD}:charge"}}
  - {{name: pool, kind: process.host}}
"""

ACTIVITY = ("config entry 'app:acharge' is a function.py (an activity, run by workflows), "
            "not a runnable target")


async def test_an_async_function_py_entry_is_refused_as_a_process_or_a_workflow(
        autojump_clock: Any) -> None:
    """``--main app:acharge`` was refused (a function.py entry is an activity), but
    ``node.spawn("app:acharge")``, a ``ChildSpec`` of it and a start on a workflow host
    ran its async function as a plain process or as a workflow (a permanent child then
    restarted after each normal exit until its supervisor gave up). Every spawn refuses
    it now, in the words ``--main`` uses; a process.py entry still runs."""
    config = load_config_text(CONFIG)
    async with garrison.open_node(config=config) as node:
        assert await node.wait(await node.spawn("app:handler")) is None
        for host in (None, "app:pool", "workflows"):
            with pytest.raises(TypeError) as info:
                await node.spawn("app:acharge", 1, host=host)
            assert str(info.value) == ACTIVITY
        with pytest.raises(TypeError, match=f"^{re.escape(ACTIVITY)}$"):
            await node.start_workflow("app:acharge", 1)
        with pytest.raises(TypeError, match=f"^{re.escape(ACTIVITY)}$"):
            await node.schedule("s", "app:acharge", 1, every="1h")
        sup = Supervisor([])
        await node.spawn(sup)
        await trio.testing.wait_all_tasks_blocked()
        for host in (None, "workflows"):
            with pytest.raises(TypeError, match=f"^child 'c': {re.escape(ACTIVITY)}$"):
                await sup.start_child(ChildSpec("c", "app:acharge", args=(1,), host=host))
        assert sup.which_children() == []
        # a supervisor of such a child cannot start, and restarts nothing
        sup = Supervisor([ChildSpec("c", "app:acharge", args=(1,))])
        with pytest.raises(garrison.ProcessError, match=f"child 'c': {re.escape(ACTIVITY)}"):
            await node.wait(await node.spawn(sup))
        assert not [w for w in node.workflows() if w.name.endswith("async_charge")]



def test_a_function_py_entry_is_no_workflow_to_start_nor_a_service_s_process() -> None:
    """``garrison workflows start --config app.yaml app:acharge`` stored a workflow of
    the activity's function; it is refused as every start is (exit 2). A service whose
    ``process:`` names a function.py entry was a config error already: still one."""
    from garrison._store_tools import ToolError, start_transaction

    config = load_config_text(CONFIG)
    with pytest.raises(ToolError, match=f"^{re.escape(ACTIVITY)}$") as info:
        start_transaction("app:acharge", [1], config=config)
    assert info.value.code == 2
    assert start_transaction("app:order", [1], config=config)[1] == f"{MOD}:order_workflow"
    with pytest.raises(garrison.ConfigError) as problem:
        load_config_text(CONFIG + "  - {name: s, kind: process.service, "
                                  "process: app:acharge}\n")
    assert problem.value.problems == [
        "<string>: entry 'app:s' (index 6): field 'process': expected a process.py or "
        "workflow.py entry, but 'app:acharge' is a function.py"]


async def test_an_entry_id_no_entry_has_is_one_error_with_the_id_meant(
        autojump_clock: Any) -> None:
    """``node.spawn("app:nope")`` raised ``KeyError: "no config entry 'app:nope'"`` (a
    KeyError's text is its repr, quoted), a ChildSpec of it a TypeError: one
    ``NoSuchEntry`` now (still a ``KeyError``), whose text is its message, naming the
    closest id of an entry that runs (or, with none close, listing them)."""
    config = load_config_text(CONFIG)
    async with garrison.open_node(config=config) as node:
        for host in (None, "workflows"):
            with pytest.raises(garrison.NoSuchEntry) as info:
                await node.spawn("app:nope", host=host)
            assert isinstance(info.value, KeyError)
            assert info.value.entry_id == "app:nope"
            assert str(info.value) == "no config entry 'app:nope' (did you mean 'app:node'?)"
        for bare in ("handler", "hander"):
            with pytest.raises(garrison.NoSuchEntry, match=rf"^no config entry '{bare}' \(did "
                                                           r"you mean 'app:handler'\?\)$"):
                await node.spawn(bare)
        with pytest.raises(garrison.NoSuchEntry, match=r"^no config entry 'app:ordr' \(did "
                                                       r"you mean 'app:order'\?\)$"):
            await node.start_workflow("app:ordr")
        with pytest.raises(garrison.NoSuchEntry) as info:
            await node.spawn("app:zzz")
        assert str(info.value) == (
            "no config entry 'app:zzz'; expected the id of a process.py, workflow.py or "
            "process.service entry: app:handler, app:node, app:order")
        sup = Supervisor([])
        await node.spawn(sup)
        await trio.testing.wait_all_tasks_blocked()
        for host in (None, "workflows"):
            with pytest.raises(garrison.NoSuchEntry) as info:
                await sup.start_child(ChildSpec("c", "app:nope", host=host))
            assert str(info.value) == ("child 'c': no config entry 'app:nope' (did you mean "
                                       "'app:node'?)")
        assert sup.which_children() == []
