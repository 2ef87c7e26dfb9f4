"""Process values and mailboxes: Pid, Message, Event, ErrorInfo, Inbox."""

from ._mailbox import Inbox
from ._values import ErrorInfo, Event, EventKind, Message, Pid, ProcessInfo

__all__ = ["ErrorInfo", "Event", "EventKind", "Inbox", "Message", "Pid", "ProcessInfo"]
