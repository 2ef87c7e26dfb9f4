"""The pytest plugin garrison registers (entry point ``pytest11``): the
``garrison_env`` fixture. It needs pytest-trio (the test must be a trio test:
``trio_mode = true`` in the pytest config, or ``@pytest.mark.trio``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._env import WorkflowEnv


@pytest.fixture
async def garrison_env() -> AsyncIterator[WorkflowEnv]:
    """A :class:`garrison.testing.WorkflowEnv`: a node on an in-memory store whose
    workflow timers skip (``await env.sleep("30d")`` takes no real time), stopped after
    the test."""
    from ._env import workflow_env

    async with workflow_env() as env:
        yield env
