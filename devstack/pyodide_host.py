"""The Worker served from Pyodide (the Worker's real interpreter, npm `pyodide` 314.0.6,
the version workerd runs for the compatibility date)
under Node.js, with the real workers SDK: what `./dev up` runs when workerd cannot
start. `env` is wrangler.toml's [vars] overlaid with `.dev.vars`, as `wrangler dev` makes
it; the Worker's dependencies come as wheels for Pyodide (pydantic-core's
`pyemscripten_2026_0_wasm32` build from PyPI, the pure ones as they are), downloaded once
into `.local/wheels` at the versions uv.lock pins.

    PYTHONPATH=src:. python -m devstack.pyodide_host --dev-vars .dev.vars --port 8787
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from devstack import node_toolchain
from devstack.migrate import read_dotenv
from devstack.static_assets import PUBLIC

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".local" / "wheels"
PYODIDE_PLATFORM = "pyemscripten_2026_0_wasm32"
PYODIDE_PYTHON = "3.14"
PIP_DOWNLOAD = (
    "uv",
    "tool",
    "run",
    "--from",
    "pip",
    "pip",
    "download",
    "--quiet",
    "--no-deps",
    "--dest",
)
FOR_PYODIDE = (
    *("--platform", PYODIDE_PLATFORM, "--python-version", PYODIDE_PYTHON),
    *("--implementation", "cp", "--only-binary=:all:"),
)
# (distribution, compiled for Pyodide?) of every module the Worker imports at run time
WORKER_WHEELS = (
    ("pydantic", False),
    ("pydantic-core", True),
    ("typing-extensions", False),
    ("annotated-types", False),
    ("typing-inspection", False),
    ("workers-runtime-sdk", False),
)


def locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for package in lock["package"]:
        if package["name"] == name:
            return str(package["version"])
    raise SystemExit(f"pyodide host: {name} is not in uv.lock")


def wheel_files() -> list[Path]:
    """The Worker's wheels for Pyodide, downloaded (with pip, run by uv) when missing."""
    found: list[Path] = []
    for name, compiled in WORKER_WHEELS:
        version = locked_version(name)
        stem = f"{name.replace('-', '_')}-{version}-"
        existing = list(WHEELS.glob(f"{stem}*.whl")) if WHEELS.exists() else []
        if not existing:
            # the project's venv has no pip; uv runs one from PyPI for the download
            subprocess.run(
                [
                    *PIP_DOWNLOAD,
                    str(WHEELS),
                    *(FOR_PYODIDE if compiled else ()),
                    f"{name}=={version}",
                ],
                check=True,
                timeout=300,
            )
            existing = list(WHEELS.glob(f"{stem}*.whl"))
        found += existing
    return found


def worker_env(dev_vars: Path) -> dict[str, str]:
    wrangler = tomllib.loads((ROOT / "wrangler.toml").read_text())
    env = {key: str(value) for key, value in wrangler.get("vars", {}).items()}
    env.update(read_dotenv(dev_vars))
    return env


def host_command(
    dev_vars: Path,
    port: int,
    config_path: Path,
    settle: bool = False,
    src: Path = ROOT / "src",
    trivial: str | None = None,
) -> list[str]:
    try:
        node = node_toolchain.node()
    except node_toolchain.NodeMissing as missing:
        raise SystemExit(f"pyodide host: {missing}") from None
    config = {
        "port": port,
        "src": str(src.resolve()),
        "standins": str(ROOT / "devstack" / "pyodide_standins"),
        "wheels": [str(wheel) for wheel in wheel_files()],
        "env": worker_env(dev_vars),
        "settle": settle,
        "trivial": trivial,
        "assets": str(PUBLIC),
    }
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)  # it holds the Worker's secrets
    return [node, str(ROOT / "devstack" / "pyodide_host.mjs"), str(config_path)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.pyodide_host")
    parser.add_argument("--dev-vars", type=Path, default=ROOT / ".dev.vars")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--config", type=Path, default=ROOT / ".local" / "pyodide-host.json")
    parser.add_argument(
        "--settle",
        action="store_true",
        help="for tests: finish ctx.waitUntil work before answering (never for measuring)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="the Worker's source folder (benchmarks compare two trees in one run)",
    )
    parser.add_argument(
        "--trivial",
        choices=("host", "python"),
        help="for benchmarks: every request the Worker would get is answered with a fixed"
        " JSON body, after the JS Request is built as for the Worker, by the host itself"
        " (host: its own cost) or by a trivial Python handler (python: Pyodide's own cost)",
    )
    args = parser.parse_args()
    args.config.parent.mkdir(parents=True, exist_ok=True)
    command = host_command(
        args.dev_vars, args.port, args.config, args.settle, args.src, args.trivial
    )
    os.chdir(ROOT)  # node resolves the `pyodide` package from ./node_modules
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
    sys.exit(1)
