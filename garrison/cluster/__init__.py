"""Clusters: several nodes on one PostgreSQL store (see README, "Cluster").

The database coordinates (``garrison/persistence/_pg_cluster.py``: nodes, leases,
owners, fencing); :class:`ClusterMember` is a node's side of it."""

from ..persistence._pg_cluster import ClusterNode
from ._member import ClusterMember
from ._names import ClusterNames
from ._remote import Remote

__all__ = ["ClusterMember", "ClusterNames", "ClusterNode", "Remote"]
