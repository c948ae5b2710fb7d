"""Workers static assets (`[assets]` in wrangler.toml), as the local CPython host serves
them: a GET or HEAD for a file under `public/` is answered with it before the Worker
runs; everything else goes to the Worker. `/dir/` serves `dir/index.html` and `/dir`
redirects there (Cloudflare's default `html_handling`, "auto-trailing-slash").
The Pyodide host (pyodide_host.mjs) follows the same rules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

PUBLIC = Path(__file__).resolve().parent.parent / "public"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class Asset:
    status: int
    headers: dict[str, str]
    body: bytes


def find_asset(method: str, raw_path: str, query: str, root: Path = PUBLIC) -> Asset | None:
    """The asset answer for a request, or None when the Worker answers it."""
    if method not in ("GET", "HEAD"):
        return None
    path = unquote(raw_path)
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") or "\x00" in part for part in parts):
        return None
    target = root.joinpath(*parts)
    if path.endswith("/"):
        target = target / "index.html"
    elif _is_dir(target) and _is_file(target / "index.html"):
        location = raw_path + "/" + (f"?{query}" if query else "")
        return Asset(307, {"location": location}, b"")
    if not _is_file(target):
        return None
    content_type = CONTENT_TYPES.get(target.suffix, "text/plain; charset=utf-8")
    return Asset(200, {"content-type": content_type}, target.read_bytes())


# A name no file can have (longer than the file system allows, say) is no asset: the
# Worker answers it. Path.is_file() raises for ENAMETOOLONG instead of saying False.
def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
