"""garrison's errors copied and pickled (``copy.copy``, ``copy.deepcopy``, a
``multiprocessing`` pool's result, a task queue's): the same type, message and
attributes as the error raised."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

import garrison
from garrison._errors import (
    ConfigError,
    NoSuchProcess,
    NoSuchWorkflow,
    ProcessError,
    StoreError,
    WorkflowFailed,
)
from garrison.actors import ErrorInfo, Pid

ERRORS = [
    NoSuchProcess("pw0"),
    NoSuchProcess("app:pw", "service app:pw gave up after 1 restart; last error: E: x"),
    NoSuchWorkflow("order-17"),
    StoreError("s.db", "disk full"),
    ConfigError(["app.yaml: entry 'app:x': field 'rate': expected a rate"]),
    WorkflowFailed("order-17", ErrorInfo("ValueError", "bad", "")),
    ProcessError("it failed", pid=Pid("processes", "p1"),
                 error=ErrorInfo("ValueError", "bad", "")),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_an_error_copied_or_pickled_says_what_it_said(error: Exception, how: str) -> None:
    """A NoSuchProcess pickled (or copied) was built again from its message as if that
    were the name: ``no process is registered as "no process is registered as
    'pw0'"``; 993a115's ``why`` was said inside it too. So of every error whose
    constructor words its arguments."""
    again: Any = {"pickle": lambda e: pickle.loads(pickle.dumps(e)),
                  "copy": copy.copy, "deepcopy": copy.deepcopy}[how](error)
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.args == error.args
    assert vars(again) == vars(error)
    assert isinstance(again, garrison.GarrisonError)
