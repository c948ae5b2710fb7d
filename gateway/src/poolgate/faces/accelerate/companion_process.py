"""Starting the Accelerate companion (`companion.mjs`): Node.js running Prisma's
interpreter, one per gateway, started and restarted by the supervisor.

It listens on `accelerate.sock` in the supervisor's private directory (mode 0700) and
reaches the pool through each worker's `ws-<index>.sock` there. Its standard input is a
pipe the supervisor never writes to: when the supervisor dies, however it dies, the pipe
closes and the companion exits (PR_SET_PDEATHSIG cannot be asked of Node).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from poolgate.config import Settings

SCRIPT = Path(__file__).with_name("companion.mjs")


def companion_socket(directory: Path) -> Path:
    return directory / "accelerate.sock"


def worker_socket(directory: Path, index: int) -> Path:
    """Where worker `index` serves WebSocket sessions to the companion only."""
    return directory / f"ws-{index}.sock"


def sessions_per_database(settings: Settings) -> int:
    """The companion's Neon Pool size for one database: each of its sessions holds one of
    poolgate's pooled connections while open, so half of `--pool-size` at most, leaving
    the rest to /sql and WebSocket clients of the same role and database."""
    return max(1, settings.pool_size // 2)


def spawn(settings: Settings, directory: Path) -> tuple[int, int]:
    """Start the companion; (its pid, the write end of its stdin pipe, kept open)."""
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    sockets = ",".join(str(worker_socket(directory, i)) for i in range(settings.workers))
    env = {
        **os.environ,
        "POOLGATE_COMPANION_SOCKET": str(companion_socket(directory)),
        "POOLGATE_COMPANION_UPSTREAMS": sockets,
        "POOLGATE_NODE_MODULES": settings.accelerate_node_modules,
        "POOLGATE_COMPANION_SESSIONS": str(sessions_per_database(settings)),
        "POOLGATE_TRANSACTION_TIMEOUT_MAX_MS": str(round(settings.transaction_timeout_max * 1000)),
        "POOLGATE_ACQUIRE_TIMEOUT_MS": str(round(settings.acquire_timeout * 1000)),
    }
    pid = os.posix_spawn(
        settings.accelerate_node,
        [settings.accelerate_node, str(SCRIPT)],
        env,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, read_end, 0),
            (os.POSIX_SPAWN_CLOSE, write_end),
        ],
    )
    os.close(read_end)
    sys.stderr.flush()
    return pid, write_end
