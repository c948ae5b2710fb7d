"""The pinned toolchain can run this Worker: wrangler's workerd accepts the compatibility
date, workers-py accepts the wrangler, Node is new enough for it, and `wrangler dev` on
the Worker gets past configuration, the date and module loading, stopping (offline) only
where workerd fetches its Pyodide runtime bundle, which it looks for in our cache first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from pywrangler.utils import MIN_WRANGLER_VERSION

from devstack import node_toolchain
from tests.support.node import node_eval

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
WRANGLER = str(ROOT / "node_modules" / ".bin" / "wrangler")
NOT_INTERACTIVE = ["--show-interactive-dev-session=false"]


def package_json(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(
        (ROOT / "node_modules" / name / "package.json").read_text()
    )
    return loaded


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_the_pinned_workerd_supports_the_workers_compatibility_date() -> None:
    wanted = str(tomllib.loads((ROOT / "wrangler.toml").read_text())["compatibility_date"])
    newest = node_eval("console.log(require('workerd').compatibilityDate)")
    assert newest >= wanted, (
        f"wrangler.toml's compatibility_date is {wanted}, but the pinned workerd "
        f"({package_json('workerd')['version']}) supports dates up to {newest}"
    )


def test_the_pinned_wrangler_is_one_that_workers_py_accepts() -> None:
    pinned = str(package_json("wrangler")["version"])
    required = ".".join(map(str, MIN_WRANGLER_VERSION))
    assert version(pinned) >= MIN_WRANGLER_VERSION, (
        f"wrangler {pinned} is pinned, but workers-py requires wrangler >= {required}"
    )
    declared = json.loads((ROOT / "package.json").read_text())["devDependencies"]["wrangler"]
    assert declared == pinned


def test_the_projects_node_is_new_enough_for_the_pinned_wrangler() -> None:
    engines = package_json("wrangler")["engines"]
    assert isinstance(engines, dict)
    needed = version(str(engines["node"]))
    have = node_eval("console.log(process.versions.node)")
    assert version(have) >= needed, f"Node {have}, wrangler needs {engines['node']}"


def wrangler_dev(cache: Path) -> str:
    """`wrangler dev` on the Worker with the bundle cache in `cache`; its whole output.
    It runs until it fails or serves; serving is stopped after a few seconds."""
    env = node_toolchain.environment(
        {
            **os.environ,
            "WRANGLER_SEND_METRICS": "false",
            "CI": "true",
            "MINIFLARE_WORKERD_PATH": str(node_toolchain.WORKERD_WITH_CACHE),
            "POOLED_PYODIDE_BUNDLE_CACHE": str(cache),
        }
    )
    process = subprocess.Popen(
        [WRANGLER, "dev", "--ip", "127.0.0.1", "--port", "0", *NOT_INTERACTIVE],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        # it served: workerd had the bundle (a machine that can download it)
        process.terminate()
        output, _ = process.communicate(timeout=30)
        output += "\n[the test stopped a serving wrangler dev]"
    return ANSI.sub("", output)


def assert_it_got_past_configuration_date_and_modules(output: str) -> None:
    assert "requires compatibility date" not in output, output[-3000:]
    # entry.py is the main module; the table lists the modules attached to it
    for module in ("router.py", "routes/table.py", "db/client.py", "workers_adapter.py"):
        assert module in output, f"{module} not in the module table:\n{output[-3000:]}"
    assert "Starting local server" in output, output[-3000:]


def test_wrangler_dev_stops_only_at_the_pyodide_bundle_download_when_offline(
    tmp_path: Path,
) -> None:
    output = wrangler_dev(tmp_path / "empty-cache")
    assert_it_got_past_configuration_date_and_modules(output)
    if "[the test stopped a serving wrangler dev]" in output:
        assert node_toolchain.cached_bundle(tmp_path / "empty-cache") is not None
        return  # online: workerd downloaded the bundle into the cache and ran the Worker
    failure = re.search(r"Request for Pyodide bundle failed; url = (\S+?);", output)
    assert failure, f"wrangler dev did not stop at the bundle download:\n{output[-3000:]}"
    assert failure.group(1).endswith("/" + node_toolchain.PYODIDE_BUNDLE)
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert errors and all(
        "Pyodide bundle" in line or "Uncaught exception" in line or "failed to start" in line
        for line in errors
    ), errors


def test_workerd_looks_for_its_pyodide_bundle_in_the_projects_cache(tmp_path: Path) -> None:
    """A file that is not the bundle, placed where the cache keeps it, is read and
    refused by workerd's own integrity check, which names the digest it expects."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / node_toolchain.PYODIDE_BUNDLE).write_bytes(b"not the bundle")
    output = wrangler_dev(cache)
    assert_it_got_past_configuration_date_and_modules(output)
    refused = re.search(r"integrity check failed.*?expectedIntegrity = (\S+?);", output)
    assert refused, output[-3000:]
    assert refused.group(1) == node_toolchain.PYODIDE_BUNDLE_SHA256
    assert node_toolchain.cached_bundle(cache) is None


def test_the_worker_tier_runs_on_workerd_when_the_bundle_is_cached() -> None:
    if node_toolchain.cached_bundle() is None:
        pytest.skip(
            f"not run on workerd: {node_toolchain.missing_bundle_reason()}; "
            "the Worker tier ran on the Pyodide and CPython hosts only"
        )
    from tests.worker.conftest import HOSTS

    assert "workerd" in HOSTS
