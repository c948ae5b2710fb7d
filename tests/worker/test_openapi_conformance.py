"""schemathesis against the Worker's own `/openapi.json`, served by the CPython host
over HTTP with the real gateway and Postgres behind it: no 5xx, and every status,
header, content type and body the API answers is the one the document describes.

Every check runs but `positive_data_acceptance`: it expects any schema-valid request
to succeed, and this API rightly refuses some (a post for an author who does not
exist is 422; a well-formed cursor the API did not issue is 400 bad_cursor).
Bounded in `./dev test`; FUZZ_EXAMPLES / FUZZ_SEED for a longer or different run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
