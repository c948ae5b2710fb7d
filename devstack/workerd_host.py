"""The Worker under real workerd: `pywrangler dev` (the user's own command) with the
project's Node.js and workerd's Pyodide runtime bundle cached under `.local/`.

pywrangler first vendors `[project.dependencies]` for Pyodide (it downloads a Python 3.14
build the first time), then runs `npx --yes wrangler dev`; workerd then fetches its
Pyodide bundle, from `.local/pyodide-bundles` when an earlier start left it there
(devstack/workerd_with_bundle_cache). `env` is `.dev.vars` passed as `--var`s, so a test's
settings win over a `.dev.vars` that `./dev up` left in the project.

    python -m devstack.workerd_host --dev-vars .dev.vars --port 8787
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devstack import node_toolchain
from devstack.migrate import read_dotenv

ROOT = Path(__file__).resolve().parent.parent


def host_command(dev_vars: Path, port: int) -> list[str]:
    pywrangler = str(Path(sys.executable).parent / "pywrangler")
    command = [pywrangler, "dev", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--show-interactive-dev-session=false"]
    for key, value in read_dotenv(dev_vars).items():
        command += ["--var", f"{key}:{value}"]
    return command


def host_environment() -> dict[str, str]:
    env = node_toolchain.environment()
    env["MINIFLARE_WORKERD_PATH"] = str(node_toolchain.WORKERD_WITH_CACHE)
    env.setdefault("WRANGLER_SEND_METRICS", "false")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.workerd_host")
    parser.add_argument("--dev-vars", type=Path, default=ROOT / ".dev.vars")
    parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args()
    command = host_command(args.dev_vars, args.port)
    os.chdir(ROOT)
    os.execve(command[0], command, host_environment())


if __name__ == "__main__":
    main()
