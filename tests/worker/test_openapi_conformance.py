"""schemathesis against the Worker's own `/openapi.json`, served by the CPython host
over HTTP with the real gateway and Postgres behind it: no 5xx, and every status,
header, content type and body the API answers is the one the document describes.

Every check runs but `positive_data_acceptance`: it expects any schema-valid request
to succeed, and this API rightly refuses some (a post for an author who does not
exist is 422; a well-formed cursor the API did not issue is 400 bad_cursor).
Bounded in `./dev test`; FUZZ_EXAMPLES / FUZZ_SEED for a longer or different run.

What schemathesis cannot see: it sends an undeclared `Content-Type` (text/plain) in
its coverage phase, but judges that answer only for a 5xx: `status_code_conformance`
skips such request-shape probes (`skips_on_unexpected_http_status`), so a 415 missing
from a route's responses passed (POST /posts/{id}/transfer); and it never sends a body
over 1 MiB, so an undocumented 413 never shows. The second test sends those refusals
itself, to every operation the served document lists, and holds each answer to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fuzzing import examples
from tests.support.services import WorkerServer


def test_the_api_conforms_to_its_openapi_document(
    worker_server: WorkerServer, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{worker_server.url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(examples(25)),
        "--seed",
        os.environ.get("FUZZ_SEED", "20261125"),
        "--generation-database",
        "none",
        "--no-color",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert " passed" in report and " failed" not in report


REFUSED_BODIES: dict[str, tuple[dict[str, str], bytes]] = {
    "not-json-media-type": ({"content-type": "text/plain"}, b'{"a": 1}'),
    "malformed-json": ({"content-type": "application/json"}, b'{"a": '),
    "not-an-object": ({"content-type": "application/json"}, b"[]"),
    "over-1-mib": ({"content-type": "application/json"}, b" " * (1024 * 1024 + 1)),
}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, by_method in document["paths"].items():
        for method, operation in by_method.items():
            found.append((method.upper(), path.replace("{id}", "1"), operation))
    return found


@pytest.mark.parametrize("refusal", sorted(REFUSED_BODIES))
def test_every_refused_body_is_answered_with_a_status_the_document_lists(
    worker_server: WorkerServer, refusal: str
) -> None:
    headers, body = REFUSED_BODIES[refusal]
    document = httpx.get(f"{worker_server.url}/openapi.json").json()
    undocumented = []
    for method, path, operation in operations(document):
        if method not in ("POST", "PATCH", "DELETE"):
            continue
        if refusal != "over-1-mib" and "requestBody" not in operation:
            continue  # a route without a body never reads one
        reply = httpx.request(
            method, f"{worker_server.url}{path}", headers=headers, content=body, timeout=30
        )
        assert reply.headers["content-type"].startswith("application/json"), reply.text
        if str(reply.status_code) not in operation["responses"]:
            undocumented.append(f"{method} {path}: {reply.status_code} {reply.text[:200]}")
    assert undocumented == []
