"""The deploy files the README's guide uses: the systemd unit passes systemd's own
checks, and the example environment file configures a gateway that starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from poolgate.config import parse_settings

from devstack.migrate import read_dotenv

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "poolgate.service"


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of this machine's image (Debian's systemd)"
    # verify also checks that ExecStart's program exists: point it at this checkout's
    installed = Path(sys.executable).with_name("poolgate")
    unit = tmp_path / "poolgate.service"
    unit.write_text(
        UNIT.read_text()
        .replace("/opt/poolgate/.venv/bin/poolgate", str(installed))
        .replace("EnvironmentFile=/etc/", "EnvironmentFile=-/etc/")
    )
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_example_environment_configures_a_keyed_tls_gateway_on_443() -> None:
    env = read_dotenv(ROOT / "deploy" / "poolgate.env.example")
    assert env["POOLGATE_LISTEN"].endswith(":443")
    assert env["POOLGATE_TLS_CERT"] and env["POOLGATE_API_KEYS_FILE"]
    names = {name for name in env if name.startswith("POOLGATE_")}
    known = set(
        subprocess.run(
            [sys.executable, "-m", "poolgate.cli", "serve", "--help"],
            capture_output=True,
            text=True,
        )
        .stdout.replace("[", " ")
        .replace("]", " ")
        .split()
    )
    assert names <= known
    settings = parse_settings(
        [], environ={k: v for k, v in env.items() if not k.endswith(("_CERT", "_KEY", "_FILE"))}
    )
    assert settings.listen_port == 443
