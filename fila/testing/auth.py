"""API keys and ACL checks (SERVER.md §11).

A connection's identity is ``None`` when auth is off (everything allowed),
:data:`BOOTSTRAP` for the bootstrap key (a superadmin that is never stored),
or a stored key's ``key_id``. Every check re-reads the key's record, so
revocations and ACL changes apply to the next request.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from dataclasses import field

from .ids import new_key_id
from .ids import new_token

__all__ = ["BOOTSTRAP", "PERMISSION_KINDS", "ApiKey", "AuthStore", "pattern_matches", "pattern_within"]

BOOTSTRAP = "<bootstrap>"
"""The identity of a connection authenticated with the bootstrap key."""

PERMISSION_KINDS = ("produce", "consume", "admin")


def pattern_matches(pattern: str, queue: str) -> bool:
    """``*`` matches everything, ``P.*`` names starting with ``P.``, anything else exactly."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return queue.startswith(pattern[:-1])
    return pattern == queue


def pattern_within(granted: str, admin: str) -> bool:
    """Delegation: may a caller holding admin pattern ``admin`` grant ``granted``?"""
    if admin == "*":
        return True
    if granted == admin:
        return True
    return admin.endswith(".*") and granted != "*" and granted.startswith(admin[:-1])


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ApiKey:
    """A stored API key record (the token itself is kept only as a hash)."""

    key_id: str
    name: str
    hashed_key: str
    created_at_ms: int
    expires_at_ms: int  # 0 = never
    is_superadmin: bool
    permissions: list[tuple[str, str]] = field(default_factory=list)

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms != 0 and now_ms > self.expires_at_ms


class AuthStore:
    """Stored keys plus the bootstrap key; auth is on when a bootstrap key is set."""

    def __init__(self, bootstrap_key: str | None) -> None:
        self.bootstrap_key = bootstrap_key
        self.keys: dict[str, ApiKey] = {}
        self._by_hash: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return self.bootstrap_key is not None

    # ---------------------------------------------------------------- keys

    def create(self, name: str, expires_at_ms: int, is_superadmin: bool) -> tuple[ApiKey, str]:
        """A new key record and its plaintext token (shown once)."""
        token = new_token()
        hashed = hashlib.sha256(token.encode()).hexdigest()
        key = ApiKey(new_key_id(), name, hashed, _now_ms(), expires_at_ms, is_superadmin)
        self.keys[key.key_id] = key
        self._by_hash[hashed] = key.key_id
        return key, token

    def revoke(self, key_id: str) -> bool:
        key = self.keys.pop(key_id, None)
        if key is None:
            return False
        self._by_hash.pop(key.hashed_key, None)
        return True

    def listed(self) -> list[ApiKey]:
        """Every stored key (expired ones too), ordered by key_id as storage does."""
        return [self.keys[k] for k in sorted(self.keys)]

    def authenticate(self, token: str | None) -> tuple[str | None, str | None]:
        """``(identity, None)`` on success, ``(None, error message)`` on refusal."""
        if not self.enabled:
            return None, None
        if token is None:
            return None, "API key required"
        if token == self.bootstrap_key:
            return BOOTSTRAP, None
        key_id = self._by_hash.get(hashlib.sha256(token.encode()).hexdigest())
        key = self.keys.get(key_id) if key_id is not None else None
        if key is None or key.expired(_now_ms()):
            return None, "invalid API key"
        return key.key_id, None

    # -------------------------------------------------------------- checks

    def _record(self, identity: str) -> ApiKey | None:
        return self.keys.get(identity)

    def is_superadmin(self, identity: str | None) -> bool:
        if not self.enabled or identity == BOOTSTRAP:
            return True
        key = self._record(identity) if identity is not None else None
        return key is not None and key.is_superadmin

    def allowed(self, identity: str | None, kind: str, queue: str) -> bool:
        """``kind`` permission on ``queue``."""
        if not self.enabled or identity == BOOTSTRAP:
            return True
        key = self._record(identity) if identity is not None else None
        if key is None:
            return False
        if key.is_superadmin:
            return True
        return any(k == kind and pattern_matches(p, queue) for k, p in key.permissions)

    def any_admin(self, identity: str | None) -> bool:
        if not self.enabled or identity == BOOTSTRAP:
            return True
        key = self._record(identity) if identity is not None else None
        if key is None:
            return False
        return key.is_superadmin or any(k == "admin" for k, _ in key.permissions)

    def global_admin(self, identity: str | None) -> bool:
        return self.allowed(identity, "admin", "*")

    def can_grant(self, identity: str | None, patterns: list[str]) -> bool:
        """Every pattern fits within one of the caller's admin patterns."""
        if self.is_superadmin(identity):
            return True
        key = self._record(identity) if identity is not None else None
        if key is None:
            return False
        admin = [p for k, p in key.permissions if k == "admin"]
        return all(any(pattern_within(g, a) for a in admin) for g in patterns)
