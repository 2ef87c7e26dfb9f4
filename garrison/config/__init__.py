"""Config: Wippy-style YAML files -> a checked :class:`Config` of frozen entries.

>>> from garrison.config import load_config
>>> config = load_config("app.yaml")       # ConfigError lists every problem
>>> [s.id for s in config.services()]      # in dependency order

A bad config raises :class:`~garrison.ConfigError` whose lines name the file, the
entry and the field; :func:`check_config` returns those lines instead.
"""

from .._errors import ConfigError
from ._entries import (
    BUILTIN_HOSTS,
    KINDS,
    Entry,
    HostEntry,
    Lifecycle,
    RestartPolicy,
    ScheduleEntry,
    ServiceEntry,
    SourceEntry,
    WorkflowHostEntry,
)
from ._loader import Config, check_config, load_config, load_config_text, load_configs

__all__ = [
    "BUILTIN_HOSTS",
    "KINDS",
    "Config",
    "ConfigError",
    "Entry",
    "HostEntry",
    "Lifecycle",
    "RestartPolicy",
    "ScheduleEntry",
    "ServiceEntry",
    "SourceEntry",
    "WorkflowHostEntry",
    "check_config",
    "load_config",
    "load_config_text",
    "load_configs",
]
