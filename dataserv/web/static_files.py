"""The dashboard's files: a fixed table of URL paths to files in the package.

Only the paths in FILES are served (no directory is ever listed or walked, so no
path can reach outside it). Files are read once, when the module is imported. Each
answer has an ETag, and If-None-Match gets a 304; the vendored library sits under a
versioned path and may be cached for a year, the rest is revalidated on every load.
"""

import functools
import hashlib
import pkgutil
from typing import Any, Dict, Optional, Tuple

CHART_JS = "vendor/chart.js-4.5.1/chart.umd.min.js"
_REVALIDATE = b"no-cache"
_IMMUTABLE = b"public, max-age=31536000, immutable"

# URL path -> (file under dataserv/web/static, Content-Type, Cache-Control)
FILES: Dict[str, Tuple[str, str, bytes]] = {
    "/": ("index.html", "text/html; charset=utf-8", _REVALIDATE),
    "/favicon.ico": ("favicon.svg", "image/svg+xml", _REVALIDATE),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8", _REVALIDATE),
    "/static/style.css": ("style.css", "text/css; charset=utf-8", _REVALIDATE),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml", _REVALIDATE),
    "/static/" + CHART_JS: (CHART_JS, "text/javascript; charset=utf-8", _IMMUTABLE),
}


class StaticFile:
    """One file's bytes and the headers it is sent with."""

    def __init__(self, body: bytes, content_type: str, cache_control: bytes) -> None:
        self.body = body
        self.content_type = content_type.encode("ascii")
        self.cache_control = cache_control
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode("ascii") + b'"'


@functools.lru_cache(maxsize=None)
def load() -> Dict[str, StaticFile]:
    """Every file of FILES, read from the package."""
    loaded = {}
    for path, (name, content_type, cache_control) in FILES.items():
        body = pkgutil.get_data("dataserv.web", "static/" + name)
        if body is None:
            raise FileNotFoundError(name)
        loaded[path] = StaticFile(body, content_type, cache_control)
    return loaded


class StaticFiles:
    """Answers requests for the paths of FILES."""

    def __init__(self, files: Optional[Dict[str, StaticFile]] = None) -> None:
        self.files = files if files is not None else load()

    def serve(self, request: Any, path: str) -> Optional[bytes]:
        """The body for ``path`` with its headers set; None when there is no such file
        (the caller answers 404)."""
        found = self.files.get(path)
        if found is None:
            return None
        request.setHeader(b"Cache-Control", found.cache_control)
        request.setHeader(b"ETag", found.etag)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        match = request.getHeader(b"If-None-Match")
        if match is not None and found.etag in [m.strip() for m in match.split(b",")]:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", found.content_type)
        request.setHeader(b"Content-Length", b"%d" % len(found.body))
        return found.body
