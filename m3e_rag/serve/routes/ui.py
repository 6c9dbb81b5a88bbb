"""``GET /ui``: the retrieval playground, three static files shipped in the package (``m3e_rag/serve/ui``).

The page needs no build step and loads nothing from outside this server (no CDN, no web fonts:
many servers are offline). It holds no index data itself: it calls ``/v1/search``, ``/v1/index``,
``/v1/neighbours``, ``/v1/terms`` and ``/health`` from the browser, with the API key as a bearer
token when the server has one, so the page is served without a key, as ``/docs`` is.

Every answer carries a Content-Security-Policy that allows scripts, styles and requests from this
origin only and no inline script or style (index text that slipped into the DOM as HTML still could
not run), forbids framing (clickjacking), and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from m3e_rag.serve.http_errors import ApiError

__all__ = ["router", "CSP", "UI_FILES", "SECURITY_HEADERS"]

router = APIRouter()

#: The page's Content-Security-Policy: same-origin scripts, styles and requests only, nothing inline.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: Headers on every UI answer.
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new version of the package shows at once
}
#: The files served under /ui/ and their media types.
UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    """A UI file's bytes, read from the installed package once."""
    return resources.files("m3e_rag.serve").joinpath("ui", name).read_bytes()


def _file(name: str) -> Response:
    return Response(_read(name), media_type=UI_FILES[name], headers=SECURITY_HEADERS)


@router.get("/ui", tags=["ui"])
async def page() -> Response:
    """The playground page (HTML; its script and style are /ui/app.js and /ui/app.css)."""
    return _file("index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """One of the page's files: ``app.js``, ``app.css`` (or ``index.html``, the page itself)."""
    if name not in UI_FILES:
        raise ApiError(404, f"/ui/{name[:100]} is not a file of the playground; open /ui.", code="not_found")
    return _file(name)
