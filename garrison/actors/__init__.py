"""Process values and mailboxes: Pid, Message, Event, ErrorInfo, Inbox (and, private,
the runtime context variable and the cancel switch every process body runs under)."""

from ._mailbox import Inbox
from ._values import ErrorInfo, Event, EventKind, Message, Pid, ProcessInfo

__all__ = ["ErrorInfo", "Event", "EventKind", "Inbox", "Message", "Pid", "ProcessInfo"]
