"""Stand-in for workerd's `_pyodide_entrypoint_helper` module (built into the runtime).

In workerd it carries the `cloudflare:workers` and `cloudflare:sockets` JS modules,
imports JS modules on request, and patches `ctx.waitUntil` so it accepts Python
awaitables. The adapter uses none of the module imports; the test supplies its own
`ctx` whose `waitUntil` is a Python function, so the patch is a no-op here.
"""

from collections.abc import Generator
from typing import Any

cloudflareWorkersModule: Any = None
cloudflareSocketsModule: Any = None


def doAnImport(module_name: str) -> Any:
    raise ImportError(f"{module_name} exists only inside workerd")


def patch_env_helper(kwds: Any) -> Generator[None]:
    yield


def patchWaitUntil(ctx: Any) -> None:
    return None
