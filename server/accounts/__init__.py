"""Staff accounts of the HTTP API: roles, the permission table, passwords, sessions.

- ``Role`` and ``allowed(role, action)``: who may do what (one table, ``PERMISSIONS``).
- ``AccountStore``: the accounts and their sessions in SQLite (store.py).
- ``RateLimiter``: token buckets for login and acknowledge attempts (ratelimit.py).
- ``secadero users add|remove|list|passwd``: cli.py.

The agreed interface with the web app is /work/ACCOUNTS_INTERFACE.md's and
docs/security.md's "Accounts" section.
"""

from __future__ import annotations

from secadero.server.accounts.roles import ACTIONS, PERMISSIONS, Role, allowed
from secadero.server.accounts.store import (
    Account,
    AccountError,
    AccountStore,
    NewerSchema,
    Session,
)

__all__ = ["ACTIONS", "PERMISSIONS", "Account", "AccountError", "AccountStore", "NewerSchema",
           "Role", "Session", "allowed"]
