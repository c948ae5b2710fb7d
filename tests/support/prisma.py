"""Prisma's CLI and client as the tests run them: offline, quiet, generated into a
temporary folder of the test's own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devstack import node_toolchain


def quiet_prisma() -> dict[str, str]:
    """No update check or telemetry from Prisma's CLI and client (the tests run offline)."""
    return {"CHECKPOINT_DISABLE": "1", "PRISMA_HIDE_UPDATE_MESSAGE": "1"}


def generate_client(folder: Path, cli_package: str = "prisma") -> None:
    """`prisma generate` in `folder` (a copy of a prisma/ folder), offline, by the CLI of
    `cli_package` (package.json has the other supported version as `prisma-7.10.0`).

    The folder links the project's node_modules, where the generated code finds
    @prisma/client's runtime. `PRISMA_SCHEMA_ENGINE_BINARY=/bin/false`: generate would
    download the schema engine, which it does not need (no migrations here)."""
    (folder / "node_modules").symlink_to(node_toolchain.ROOT / "node_modules")
    cli = node_toolchain.ROOT / "node_modules" / cli_package / "build" / "index.js"
    env = {**quiet_prisma(), "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/false"}
    result = subprocess.run(
        [node_toolchain.node(), str(cli), "generate"],  # prisma.config.ts names the schema
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env=node_toolchain.environment({**os.environ, **env}),
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
