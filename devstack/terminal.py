"""What `./dev up` shows: start-up, the URLs, warnings and errors. Each service's
request lines (one per request) go only to its log file under `.local/logs/`; every
other line goes to the file and, prefixed with the service's name, to the terminal."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import IO

# A line that records one request: the gateway's JSON request log and the CPython
# host's access log (the Pyodide host prints none).
REQUEST_LINE_PREFIXES = ('{"event": "request"', "worker: ")


def is_request_line(line: str) -> bool:
    return line.startswith(REQUEST_LINE_PREFIXES)


def relay(process: subprocess.Popen[bytes], log_path: Path, prefix: str = "") -> threading.Thread:
    """Copy the process's output (stdout=PIPE, stderr=STDOUT) as described above, in a
    thread that ends when the process closes its output."""
    assert process.stdout is not None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    thread = threading.Thread(
        target=_copy, args=(process.stdout, log_path, prefix), name=f"relay {log_path.name}"
    )
    thread.daemon = True
    thread.start()
    return thread


def _copy(pipe: IO[bytes], log_path: Path, prefix: str) -> None:
    with log_path.open("ab") as log:
        for raw in pipe:
            log.write(raw)
            log.flush()
            line = raw.decode(errors="replace").rstrip("\n")
            if line and not is_request_line(line):
                print(prefix + line, flush=True)
    pipe.close()
