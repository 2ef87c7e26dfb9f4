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

from ._services import ServiceInfo, ServiceStatus

__all__ += ["ServiceInfo", "ServiceStatus"]
