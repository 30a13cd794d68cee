"""The HTTP face of a :class:`~vop.search.service.SearchService` (FastAPI).

Routes::

    GET /                       the search page (HTML + inline JS)
    GET /api/health             {"status": "ok", "indexes": [...], "examples": [...]}
    GET /api/search?q=&k=&index=  ranked results (JSON)
    GET /api/videos/{id}        one video's metadata (JSON)
    GET /media/{id}             the video file (byte ranges, for seeking; HEAD too)
    GET /thumbs/{id}            a thumbnail strip (JPEG, or PNG without Pillow; HEAD too)

``{id}`` is 16 hex digits; ``index=`` picks the index (default: the first that holds the
id). Every error is JSON ``{"error": message, "status": code}``, a refused Host header
included: 400 for a bad request (empty, over-long or undecodable query, control
characters, k out of range, malformed id, foreign Host), 404 for an unknown index, id or
route and for a video gone or changed since indexing (see
:meth:`~vop.search.service.LoadedIndex.file`), 405 for another method.

Paths in answers are shown with :func:`vop.display.escape`: control characters and bytes
that are not UTF-8 (file names are bytes) as ``\\xNN``, so every answer is valid JSON text.

Security: files are only ever looked up by id; the Host header must name the loopback
interface (or the configured host), which defeats DNS-rebinding pages that would read the
collection through a browser; responses carry ``nosniff``, ``no-referrer`` and, for the
page, a content security policy that only allows this origin.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Iterable
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vop.display import escape
from vop.search.page import PAGE
from vop.search.service import NotFound, QueryError, SearchService

__all__ = ["create_app", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo",
                ".mov": "video/quicktime"}
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'; "
        "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _SecurityHeaders:
    """Pure ASGI middleware adding the security headers (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_page = scope.get("path") == "/"

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if is_page:
                    headers.append((b"content-security-policy", _CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _HostCheck:
    """Pure ASGI middleware refusing a Host header not in ``hosts`` with a JSON 400
    (Starlette's TrustedHostMiddleware answers in plain text)."""

    def __init__(self, app, hosts: list[str]):
        self.app = app
        self.hosts = {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = ""
        for key, value in scope.get("headers", []):
            if key == b"host":
                host = value.decode("latin-1").lower()
                break
        name = host if host.endswith("]") else host.rsplit(":", 1)[0]  # without the port ("[::1]:80" too)
        if name not in self.hosts:
            response = JSONResponse({"error": "invalid Host header (start vop serve with --allow-host to accept it)",
                                     "status": 400}, status_code=400)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _params(request) -> dict[str, str]:
    """Query parameters decoded strictly: bytes that are not UTF-8 are a 400, not U+FFFD."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise QueryError("the query string is not valid UTF-8") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def create_app(service: SearchService, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS):
    """The FastAPI app serving ``service``. ``allowed_hosts``: accepted Host headers
    (``["*"]`` accepts any, for a server deliberately exposed beyond loopback)."""
    app = FastAPI(title="vop search", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status)

    @app.exception_handler(QueryError)
    async def _bad_request(request, exc):
        return error(400, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(request, exc):
        return error(404, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return error(400, "invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.exception_handler(Exception)
    async def _internal(request, exc):  # pragma: no cover - a bug; keep serving
        return error(500, f"internal error ({type(exc).__name__})")

    def index_param(request: Request) -> str | None:
        return _params(request).get("index") or None

    def hit_json(hit) -> dict:
        r = hit.record
        suffix = f"?index={hit.index}"
        return {"rank": hit.rank, "score": round(hit.score, 6), "id": r.id, "path": escape(r.path), "index": hit.index,
                "duration": r.duration, "width": r.width, "height": r.height,
                "media_url": f"/media/{r.id}{suffix}", "thumb_url": f"/thumbs/{r.id}{suffix}",
                "video_url": f"/api/videos/{r.id}{suffix}"}

    @app.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE)

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)  # browsers ask; an empty answer keeps their consoles quiet

    @app.get("/api/health")
    def health():
        return {"status": "ok", "indexes": [i.summary() for i in service.indexes.values()],
                "examples": service.examples}

    @app.get("/api/search")
    def search(request: Request):
        params = _params(request)
        if "q" not in params:
            raise QueryError("missing the query parameter q")
        started = time.perf_counter()
        hits = service.search(params["q"], params.get("k", "10"), params.get("index") or None)
        loaded = service.get(params.get("index") or None)
        return {"query": params["q"].strip(), "index": loaded.name, "count": len(hits),
                "took_ms": round(1000 * (time.perf_counter() - started), 2), "results": [hit_json(h) for h in hits]}

    @app.get("/api/videos/{video_id}")
    def video(video_id: str, request: Request):
        loaded, record = service.video(video_id, index_param(request))
        try:
            loaded.file(record)
            available = True
        except NotFound:
            available = False
        suffix = f"?index={loaded.name}"
        return {**record.to_dict(), "path": escape(record.path), "index": loaded.name, "available": available,
                "media_url": f"/media/{record.id}{suffix}", "thumb_url": f"/thumbs/{record.id}{suffix}"}

    @app.api_route("/media/{video_id}", methods=["GET", "HEAD"])
    def media(video_id: str, request: Request):
        path = service.media_path(video_id, index_param(request))
        media_type = _MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        return FileResponse(path, media_type=media_type or "application/octet-stream",
                            headers={"Cache-Control": "private, max-age=300"})

    @app.api_route("/thumbs/{video_id}", methods=["GET", "HEAD"])
    def thumb(video_id: str, request: Request):
        data, media_type = service.thumbnail(video_id, index_param(request))
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    hosts = list(allowed_hosts)
    if "*" not in hosts:
        app.add_middleware(_HostCheck, hosts=hosts)
    app.add_middleware(_SecurityHeaders)
    return app
