"""Hosts run processes: the in-memory process host and the durable workflow host."""

from ._process_host import ProcessHost

__all__ = ["ProcessHost"]
