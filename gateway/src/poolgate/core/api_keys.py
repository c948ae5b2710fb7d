"""API keys in front of Postgres authentication.

With keys configured, every `/sql`, `/invalidate` and `/metrics` call must carry
`Authorization: Bearer <key>`, checked before the body is read and before anything
reaches Postgres: without a valid key the answer is 401, whatever the password. The
Postgres password then comes from the connection string only. Without keys, the
gateway speaks Neon's protocol as it is: a bearer token is the Postgres password.

Keys are compared in constant time, each against every configured key, so the time
taken says nothing about which key, or how much of one, was right. Two keys listed
side by side let a key be rotated without downtime.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from poolgate.core.errors import Unauthorized


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_api_key(headers: Mapping[str, str], keys: tuple[str, ...]) -> None:
    """Pass if no keys are configured or the request carries one of them; else 401."""
    if not keys:
        return
    offered = (bearer_token(headers) or "").encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered, key.encode())
    if not matched:
        raise Unauthorized()
