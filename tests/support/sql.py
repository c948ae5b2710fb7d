"""A minimal client of the wire protocol, for tests that speak it directly."""

from __future__ import annotations

from typing import Any

import httpx


def post_sql(
    base_url: str,
    connection_string: str,
    body: Any,
    *,
    raw: bool = False,
    array_mode: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    sent = {"Neon-Connection-String": connection_string, **(headers or {})}
    if raw:
        sent["Neon-Raw-Text-Output"] = "true"
    if array_mode:
        sent["Neon-Array-Mode"] = "true"
    return httpx.post(f"{base_url}/sql", json=body, headers=sent, timeout=timeout)
