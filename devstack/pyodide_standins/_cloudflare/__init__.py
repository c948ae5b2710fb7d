"""Stand-in for workerd's `_cloudflare` package, just enough for the workers SDK's
start-up hooks (`_workers_sdk_patch_loader.pth`) to run in the local Pyodide host as they
run in workerd: `import_patch_manager` applies the SDK's per-module patches when those
modules are imported; `allow_entropy` lets the calls through (outside a memory snapshot
there is nothing to guard). Which patches ran is kept in `import_patch_manager.APPLIED`.
"""
