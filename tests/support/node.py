"""The project's Node.js asked a question, as the tests ask it."""

from __future__ import annotations

import subprocess

from devstack import node_toolchain


def node_eval(script: str) -> str:
    """What the project's Node.js prints for `script`, run in the repository's root."""
    return subprocess.run(
        [node_toolchain.node(), "-e", script],
        cwd=node_toolchain.ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
