"""Stand-in for workerd's `_cloudflare_compat_flags` module (built into the runtime).

The runtime exposes one boolean attribute per compatibility flag, enabled by the
Worker's compatibility date and `compatibility_flags`. The SDK reads two of them
(`python_request_headers_preserve_commas`, `python_workflows_implicit_dependencies`)
through `getattr(..., False)`. This stand-in reports every flag as off: the SDK's
oldest behaviour, which our adapter must handle anyway. The flags that are on in
production are known only to workerd; a deploy is what proves them.
"""


def __getattr__(name: str) -> bool:
    if name.startswith("__"):
        raise AttributeError(name)
    return False
