"""What the Workers runtime forbids, checked statically over src/, and the deploy bundle."""

from __future__ import annotations

import ast
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from devstack import node_toolchain

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "src").rglob("*.py"))

# Modules Pyodide cannot honour in Workers: no threads, no processes, no raw sockets,
# and no blocking network clients.
FORBIDDEN_MODULES = {
    "threading",
    "socket",
    "subprocess",
    "multiprocessing",
    "urllib.request",
    "http.client",
    "requests",
    "asyncore",
    "selectors",
    "concurrent.futures",
}
# Blocking calls of otherwise allowed modules.
FORBIDDEN_CALLS = {
    ("time", "sleep"),
    ("httpx", "Client"),
    ("httpx", "get"),
    ("httpx", "post"),
    ("httpx", "request"),
    ("asyncio", "run"),
}


def imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def attribute_calls(tree: ast.AST) -> set[tuple[str, str]]:
    return {
        (node.func.value.id, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    }


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_worker_source_uses_no_threads_sockets_processes_or_blocking_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = imported_modules(tree)
    bad = {m for m in modules if m in FORBIDDEN_MODULES or m.split(".")[0] in FORBIDDEN_MODULES}
    assert not bad, f"{path.name} imports {sorted(bad)}"
    assert not attribute_calls(tree) & FORBIDDEN_CALLS


def test_the_scan_itself_catches_a_forbidden_import_and_call() -> None:
    tree = ast.parse("import threading\nfrom socket import socket\nimport time\ntime.sleep(1)")
    assert {"threading", "socket"} <= imported_modules(tree)
    assert ("time", "sleep") in attribute_calls(tree)


def test_wrangler_dry_run_bundles_the_worker_and_nothing_of_the_gateway(tmp_path: Path) -> None:
    wrangler = ROOT / "node_modules" / ".bin" / "wrangler"
    if not wrangler.exists():
        subprocess.run(
            [*node_toolchain.npm(), "ci", "--no-audit", "--no-fund"],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
    out = tmp_path / "bundle"
    result = subprocess.run(
        [str(wrangler), "deploy", "--dry-run", "--outdir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=node_toolchain.environment(
            {**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"}
        ),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bundled = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    for module in (
        "entry.py",
        "workers_adapter.py",
        "app.py",
        "router.py",
        "routes/table.py",
        "db/client.py",
        "db/transport.py",
    ):
        assert module in bundled
    assert not [
        p
        for p in bundled
        if any(
            part in p
            for part in ("poolgate", "aiohttp", "psycopg", "devstack", "gateway", "tests/")
        )
    ]
    assert "--dry-run: exiting now." in result.stdout


def test_the_compatibility_date_keeps_the_sdks_own_start_up_hooks() -> None:
    """Before 2026-05-26 (python_process_pth_files) workerd mounts its own import hook,
    which calls pydantic_core.validate_core_schema, absent from pydantic-core 2.50.5: the
    Worker would fail at start. From that date python_modules/ is added with addsitedir
    and the SDK's .pth installs its own hooks (enable_python_external_sdk: 2026-04-21)."""
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    assert str(config["compatibility_date"]) >= "2026-05-26", (
        "compatibility_date before 2026-05-26: workerd's own import hook breaks pydantic-core"
    )
    flags = set(config.get("compatibility_flags", []))
    assert not flags & {"disable_python_process_pth_files", "disable_python_external_sdk"}, (
        "these flags turn off the SDK's start-up hooks that pydantic-core 2.50.5 needs"
    )
