"""Supervision: OTP-style supervisors (:class:`Supervisor`, :class:`ChildSpec`).

>>> from garrison.supervision import ChildSpec, Supervisor
>>> pid = await node.spawn(Supervisor([ChildSpec("worker", worker)]))
"""

from ._supervisor import (
    BRUTAL_KILL,
    INFINITY,
    ChildSpec,
    Supervisor,
    SupervisorError,
    SupervisorGaveUp,
)

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "ChildSpec",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
]

# The config loader (``_config``) is built in parallel; re-export its public names
# once it imports. TODO: make this a plain import when ``_config`` has landed.
try:
    from . import _config
except Exception:  # pragma: no cover - only while _config is unfinished
    pass
else:
    from ._config import *  # noqa: F403

    __all__ += list(_config.__all__)
