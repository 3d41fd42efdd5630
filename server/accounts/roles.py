"""The roles of the staff and what each may do: one table, read by every route."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    WORKER = "worker"          # yard worker: sees the yard, acknowledges alerts
    SUPERVISOR = "supervisor"  # closes yard alerts, runs batches
    QUALITY = "quality"        # the batch records
    TECHNICIAN = "technician"  # nodes and their health
    ADMIN = "admin"            # everything, and the accounts


_ALL = frozenset(Role)

# Action name -> the roles that may do it. A route names its action; nothing else
# decides. An action missing here is allowed to nobody (``allowed`` says False).
PERMISSIONS: dict[str, frozenset[Role]] = {
    "yard.read": _ALL,
    "alerts.read": _ALL,
    "alerts.ack": _ALL,
    "alerts.close": frozenset({Role.SUPERVISOR, Role.ADMIN}),
    "batches.read": frozenset({Role.SUPERVISOR, Role.QUALITY, Role.TECHNICIAN, Role.ADMIN}),
    "batches.write": frozenset({Role.QUALITY, Role.SUPERVISOR, Role.ADMIN}),
    "nodes.read": frozenset({Role.TECHNICIAN, Role.SUPERVISOR, Role.ADMIN}),
    "users.admin": frozenset({Role.ADMIN}),
}
ACTIONS = tuple(PERMISSIONS)


def allowed(role: Role | str, action: str) -> bool:
    """Whether ``role`` may do ``action``; False for an unknown role or action."""
    try:
        return Role(role) in PERMISSIONS.get(action, frozenset())
    except ValueError:
        return False
