"""Testing workflows: a node whose workflow timers skip, stand-ins for activities,
and replay of exported histories (golden files).

>>> import garrison.testing
>>> async def test_approval_expires_after_30_days():          # doctest: +SKIP
...     async with garrison.testing.workflow_env() as env:
...         env.mock_activity(notify_manager, result="sent")
...         await env.start(approval, "laptop", id="a")
...         await env.sleep("30d")                             # no real time passes
...         assert await env.result("a") == "expired"
>>> def test_order_workflow_still_replays():                  # doctest: +SKIP
...     garrison.testing.replay("tests/histories/order-17.json")

With pytest, the ``garrison_env`` fixture (a pytest plugin garrison registers) gives
the same ``WorkflowEnv`` as ``workflow_env()``; it needs pytest-trio.
"""

from ..hosts.workflow import History, ReplayResult
from ._env import ActivityMock, SkippingClock, WorkflowEnv, workflow_env
from ._replay import replay

__all__ = ["ActivityMock", "History", "ReplayResult", "SkippingClock", "WorkflowEnv", "replay",
           "workflow_env"]
