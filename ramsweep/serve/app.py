"""`ramsweep serve`'s web app (Starlette): one page, its assets, a JSON API under /api/ and a
stream of server-sent events. Every route is GET (HEAD): no route accepts a write, none
changes anything or signals a process.

One task looks at the files every LOOK_S (a stat each, and the bytes appended since) and wakes
the event streams when something changed; requests only read what it keeps, so any number of
open pages or scripts costs the runners nothing more than one viewer. A file that cannot be
read is said beside it on the page, and the task keeps looking (feed.py, Watcher.look).

Guards, outermost first: the security headers on every response, a strict
Content-Security-Policy among them (the page loads nothing from anywhere else; no CORS header
is ever sent); the Host header must name this server (DNS rebinding); then the token, when
there is one (`?token=` once, then a cookie; `Authorization: Bearer` for scripts), compared in
constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import threading
from collections import OrderedDict
from pathlib import Path

import anyio
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ramsweep.errors import ConfigError, StoreError
from ramsweep.report.rows import Metric, metric
from ramsweep.serve import views
from ramsweep.serve.feed import Feed

STATIC = Path(__file__).parent / "static"
LOOK_S = 0.5  # how often the files are looked at: a new result shows within about a second
STALL_S = 10.0  # a look not back by then is said on the page (a read that does not return)
KEEPALIVE_S = 15.0  # a comment on an idle event stream, so proxies and phones keep it open
COOKIE = "ramsweep_session"
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the token in a first URL never leaks through a link
    "x-frame-options": "DENY",
}
API = {
    "/api/status": "per results file: counts, time left, the runners and what each experiment in flight is doing",
    "/api/records?limit=20": "the latest results, newest first, and the failed and interrupted experiments",
    "/api/leaderboard?sort_by=val_ppl&top=20": "per data group, the best experiments by a metric (report's ranking)",
    "/api/grids?sort_by=val_ppl": "the tier-bits grids: heatmap panels and main effects",
    "/api/night?sort_by=val_ppl": "per data group, the best result so far over the night (an inline SVG chart)",
    "/api/searches": "every finished search (connectivity or in phases), the newest first: the report's table",
    "/api/experiments/KEY": "one experiment's whole record, its card and its charts (inline SVG)",
    "/api/events": "server-sent events: `update` with /api/status's body whenever anything changed",
}


class Watcher:
    """Looks at the files while the server runs; wakes whoever waits when something changed."""

    def __init__(self, feed: Feed):
        self.feed = feed
        self.changed = asyncio.Event()
        self._announced = feed.version
        self._cache: OrderedDict = OrderedDict()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(LOOK_S)
            await self.look()

    async def look(self) -> None:
        """One look at the files (Feed.refresh: it never raises), then wake the waiters if what
        is shown changed. The look runs in a daemon thread of its own, and one not back within
        STALL_S is left to finish and said on the page (Feed.stalled): a read that never returns
        (a hung network mount) can neither freeze the page nor keep the server from exiting."""
        loop = asyncio.get_running_loop()
        back = loop.create_future()

        def work():
            try:
                self.feed.refresh()
            finally:
                with contextlib.suppress(RuntimeError):  # the server has stopped meanwhile
                    loop.call_soon_threadsafe(back.set_result, None)

        threading.Thread(target=work, name="ramsweep serve: a look at the files", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(back), STALL_S)
        self.feed.stalled(STALL_S)  # this look, or an earlier one it found still reading
        if self.feed.version != self._announced:  # also when a stalled look came back since
            self._announced = self.feed.version
            self.changed.set()
            self.changed = asyncio.Event()  # the next change wakes the next waiters

    async def view(self, name: str, build, *args):
        """A view of the feed as it stands, built once per version and arguments (in a thread:
        a big grid's leaderboard takes a moment)."""
        key = (name, self.feed.version, *args)
        if key not in self._cache:
            self._cache[key] = await anyio.to_thread.run_sync(build, self.feed, *args)
            while len(self._cache) > 32:
                self._cache.popitem(last=False)
        return self._cache[key]


def create_app(feed: Feed, *, token: str | None = None, hosts: list[str] | None = None) -> Starlette:
    watcher = Watcher(feed)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await watcher.look()
        task = asyncio.create_task(watcher.run())
        yield
        task.cancel()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def api(request: Request) -> Response:
        return json({"endpoints": API, "read_only": True})

    async def status(request: Request) -> Response:
        return json(await watcher.view("status", views.status_view))

    async def records(request: Request) -> Response:
        return json(await watcher.view("records", views.records_view, bounded(request, "limit", 20, 1, 500)))

    async def leaderboard(request: Request) -> Response:
        by = sort_by(request)  # views are cached by the metric's name
        return json(await watcher.view("leaderboard", views.leaderboard_view, by.name, bounded(request, "top", 20, 1, 1000)))

    async def grids(request: Request) -> Response:
        return json(await watcher.view("grids", views.grids_view, sort_by(request).name))

    async def night(request: Request) -> Response:
        return json(await watcher.view("night", views.night_view, sort_by(request).name))

    async def searches(request: Request) -> Response:
        return json(await watcher.view("searches", views.searches_view))

    async def experiment(request: Request) -> Response:
        key = request.path_params["key"]
        found = await watcher.view("experiment", views.experiment_view, key)
        return json(found) if found is not None else json({"error": f"no experiment with key {key}"}, 404)

    async def events(request: Request) -> Response:
        async def stream():
            yield "retry: 2000\n\n"  # a lost connection is retried after 2 s (then the page catches up)
            while True:
                waiting = watcher.changed
                body = orjson.dumps(await watcher.view("status", views.status_view)).decode()
                yield f"event: update\nid: {feed.version}\ndata: {body}\n\n"
                while True:
                    try:
                        await asyncio.wait_for(waiting.wait(), KEEPALIVE_S)
                        break
                    except TimeoutError:
                        yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def refused(request: Request, exc: Exception) -> Response:
        return json({"error": str(exc)}, 400)

    async def unreadable(request: Request, exc: Exception) -> Response:
        return json({"error": str(exc)}, 503)

    async def failed(request: Request, exc: Exception) -> Response:
        """A bug's 500: Starlette sends it from outside every middleware, so it brings its own headers."""
        response = json({"error": f"internal error ({type(exc).__name__}); the server's log has the details"}, 500)
        response.headers.update(HEADERS)
        return response

    routes = [
        Route("/", index), Route("/api", api), Route("/api/", api), Route("/api/status", status),
        Route("/api/records", records), Route("/api/leaderboard", leaderboard), Route("/api/grids", grids),
        Route("/api/night", night), Route("/api/searches", searches),
        Route("/api/experiments/{key}", experiment), Route("/api/events", events),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    middleware = [Middleware(SecurityHeaders),  # outermost: also on the Host check's refusals
                  Middleware(TrustedHostMiddleware, allowed_hosts=hosts or list(LOOPBACK_NAMES)),
                  Middleware(Guard, token=token)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={ConfigError: refused, StoreError: unreadable, Exception: failed})


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def sort_by(request: Request) -> Metric:
    try:
        return metric(request.query_params.get("sort_by", "val_ppl"))
    except ConfigError as err:
        raise ConfigError(str(err).replace("--sort-by", "sort_by", 1)) from None


def bounded(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name}: '{raw}' is not a whole number from {lo} to {hi}")
    return value


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself is never stored."""
    return hmac.new(token.encode(), b"ramsweep serve session", hashlib.sha256).hexdigest()


class SecurityHeaders:
    """HEADERS on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
            await send(message)

        await self.app(scope, receive, with_headers)


class Guard:
    """The token check, when the server has a token."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token
        self.session = session_value(token) if token else None

    async def __call__(self, scope, receive, send):
        refused = self.check(Request(scope)) if self.token and scope["type"] == "http" else None
        await (refused or self.app)(scope, receive, send)

    def check(self, request: Request) -> Response | None:
        """None when the request may pass; else the response that refuses (or, for the page
        opened with the right ?token=, sets the cookie)."""
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return refuse(request, 403, "wrong token: use the URL `ramsweep serve` printed")
            if request.url.path == "/":  # the page: keep the token in a cookie and drop it from the address bar
                response = RedirectResponse("/", 303)
                response.set_cookie(COOKIE, self.session, max_age=30 * 86400, httponly=True, samesite="strict")
                return response
            return None
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            ok = hmac.compare_digest(bearer[7:].strip().encode(), self.token.encode())
            return None if ok else refuse(request, 403, "wrong token in the Authorization header")
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            ok = hmac.compare_digest(cookie.encode(), self.session.encode())
            return None if ok else refuse(request, 403, "this page's session is from another server: open the URL "
                                                        "`ramsweep serve` printed")
        return refuse(request, 401, "this dashboard needs its token: open the URL `ramsweep serve` printed "
                                    "(…/?token=…), or send `Authorization: Bearer TOKEN`")


def refuse(request: Request, status: int, why: str) -> Response:
    if request.url.path.startswith("/api"):
        return json({"error": why}, status)
    return PlainTextResponse(f"ramsweep serve: {why}\n", status)
