"""Tests of examples/document_approval.py, written with ``garrison.testing`` the way an
application tests its workflows.

Run them:  python -m pytest examples/test_document_approval.py

- ``garrison_env`` (a fixture garrison registers with pytest) is a node on an
  in-memory store whose workflow timers skip: the 48-hour deadline passes in
  milliseconds. Activities are replaced with ``env.mock_activity``.
- ``garrison.testing.replay`` replays a recorded history (``histories/``, made with
  ``garrison workflows --store S export ID``) against today's code: a change that would
  break the workflows already running in production fails here first.

The async tests are trio tests (pytest-trio): ``@pytest.mark.trio``, or
``trio_mode = true`` in pytest's config.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from document_approval import Decision, Document, document_approval, notify_reviewer, publish

import garrison
import garrison.testing

HISTORIES = Path(__file__).resolve().parent / "histories"
DOC = Document("doc-9", "ann", "Q4 plan")


@pytest.mark.trio
async def test_approved_before_the_deadline(garrison_env: garrison.testing.WorkflowEnv
                                            ) -> None:
    env = garrison_env
    env.mock_activity(notify_reviewer, result="review-doc-9")
    published = env.mock_activity(publish)
    await env.start(document_approval, DOC, id="doc-9")

    await env.sleep("47h")  # no real time passes
    assert env.status("doc-9") == "waiting"
    assert env.state("doc-9", "status") == "waiting for review"

    await env.resolve("doc-9", "approval", {"approver": "bob", "comments": "fine"})
    assert await env.result("doc-9") == Decision("approved", "bob", "fine")
    assert published.calls == [((DOC, "bob"), {})]


@pytest.mark.trio
async def test_no_review_within_48_hours_times_out(garrison_env: garrison.testing.WorkflowEnv
                                                   ) -> None:
    env = garrison_env
    env.mock_activity(notify_reviewer, result="review-doc-9")
    started = env.now()
    await env.start(document_approval, DOC, id="doc-9")
    assert await env.result("doc-9") == Decision("timeout")  # time skips while it waits
    assert env.now() - started == dt.timedelta(hours=48)
    assert env.state("doc-9", "status") == "timed out"


@pytest.mark.trio
async def test_the_reviewer_cannot_be_reached(garrison_env: garrison.testing.WorkflowEnv
                                              ) -> None:
    env = garrison_env
    env.mock_activity(notify_reviewer, error=ConnectionError("chat is down"))
    await env.start(document_approval, DOC, id="doc-9")
    with pytest.raises(garrison.WorkflowFailed, match="ActivityError: ConnectionError"):
        await env.result("doc-9")


def test_a_recorded_run_still_replays() -> None:
    """A golden history: an approval recorded by an earlier version of this code."""
    result = garrison.testing.replay(HISTORIES / "approve-doc-1.json")
    assert result.ok and result.checked == result.records
