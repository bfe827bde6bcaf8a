"""The console's pages: parse, check the session (and the CSRF token of every form), call one
service, render. Pages are plain HTML forms that work without JavaScript; every asset comes from
this package.

A page without a valid session redirects to the sign-in page; a form whose token does not match
its session is refused with 403. A Driver's API key opens nothing here: the console reads only
its own cookie.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined

from metagov.console import service as console
from metagov.console.security import CookieSigner, SignInLimiter, new_token, same
from metagov.console.service import SignedIn
from metagov.db.models import ProcessStatus
from metagov.errors import BadRequest, MetagovError
from metagov.jobs.embedded import EmbeddedRunner
from metagov.runtime import Runtime

PREFIX = "/console"
SESSION_COOKIE = "metagov_console"
SIGN_IN_COOKIE = "metagov_console_sign_in"
FLASH_COOKIE = "metagov_console_flash"
PAGE_SIZE = 50
MAX_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]

# Pages load their stylesheet from this origin and nothing else; the plots are inline SVG.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No valid console session: the answer is a redirect to the sign-in page."""


class CsrfRefused(Exception):
    """A form without the token of the session (or of the sign-in page) that served it."""


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


_templates = Environment(
    loader=PackageLoader("metagov.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["when"] = _when
_templates.filters["seconds"] = _seconds
_templates.filters["tojson_compact"] = lambda v: json.dumps(v, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Form:
    """A submitted ``application/x-www-form-urlencoded`` form."""

    fields: dict[str, list[str]]

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


async def _read_form(request: Request) -> Form:
    """The form, parsed without a multipart dependency (the console's forms are urlencoded; the
    body size is capped by the gateway's middleware)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return Form({})
    body = (await request.body()).decode("utf-8", "replace")
    return Form(parse_qs(body, keep_blank_values=True, max_num_fields=2000))


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _signer(request: Request) -> CookieSigner:
    signer: CookieSigner = request.app.state.console_signer
    return signer


async def current_operator(request: Request) -> SignedIn:
    token = _signer(request).unsign(request.cookies.get(SESSION_COOKIE))
    signed = await console.signed_in(_runtime(request), token) if token else None
    if signed is None:
        raise SignInRequired
    return signed


Operator = Annotated[SignedIn, Depends(current_operator)]


async def checked_form(request: Request, signed: Operator) -> Form:
    form = await _read_form(request)
    if not same(form.get("csrf_token"), signed.csrf_token):
        raise CsrfRefused
    return form


CheckedForm = Annotated[Form, Depends(checked_form)]


def _secure(request: Request) -> bool:
    return _runtime(request).settings.environment == "production"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )


def _flash(request: Request) -> dict[str, str] | None:
    raw = _signer(request).unsign(request.cookies.get(FLASH_COOKIE))
    if raw is None:
        return None
    try:
        found: dict[str, str] = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        return None
    return found


def render(
    request: Request,
    template: str,
    signed: SignedIn | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = _flash(request)
    html = _templates.get_template(template).render(
        signed=signed, flash=flash, path=request.url.path, **context
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def redirect(request: Request, to: str, message: str | None = None, kind: str = "ok") -> Response:
    response = RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)
    if message:
        raw = json.dumps({"message": message[:500], "kind": kind}).encode()
        value = _signer(request).sign(base64.urlsafe_b64encode(raw).decode())
        _set_cookie(request, response, FLASH_COOKIE, value, 120)
    return response


def _safe_back(value: str, default: str) -> str:
    """Where to go after a form: a console path only (never another site)."""
    parts = urlsplit(value)
    inside = parts.path == PREFIX or parts.path.startswith(PREFIX + "/")
    if parts.scheme or parts.netloc or not inside or "\\" in value or "/.." in parts.path:
        return default
    return value


async def _act(request: Request, back: str, work: Callable[[], Awaitable[str]]) -> Response:
    """Run a repair; come back to ``back`` with what happened (or why nothing did)."""
    try:
        message = await work()
    except MetagovError as exc:
        return redirect(request, back, exc.detail, "error")
    return redirect(request, back, message)


def _int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if 0 < number <= MAX_ID else None


def _page(value: str | None) -> int:
    return max(1, min(_int(value) or 1, 10_000))


def _embedded(request: Request) -> bool:
    runner = getattr(request.app.state, "runner", None)
    return isinstance(runner, EmbeddedRunner)


router = APIRouter(prefix=PREFIX, include_in_schema=False)


# --- signing in and out -----------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    token = _signer(request).unsign(request.cookies.get(SESSION_COOKIE))
    if token and await console.signed_in(_runtime(request), token):
        return redirect(request, PREFIX)
    return _sign_in_form(request, error=None)


def _sign_in_form(request: Request, error: str | None, status_code: int = 200) -> Response:
    csrf = new_token()
    next_page = _safe_back(request.query_params.get("next", ""), PREFIX)
    response = render(
        request,
        "sign_in.html",
        None,
        status_code=status_code,
        csrf_token=csrf,
        error=error,
        next_page=next_page,
    )
    _set_cookie(request, response, SIGN_IN_COOKIE, _signer(request).sign(csrf), 3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    client = request.client.host if request.client else "unknown"
    limiter: SignInLimiter = request.app.state.console_limiter
    wait = limiter.allow(client)
    if wait is not None:
        response = _sign_in_form(
            request, "Too many sign-in attempts from your address; wait and try again.", 429
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    form = await _read_form(request)
    expected = _signer(request).unsign(request.cookies.get(SIGN_IN_COOKIE))
    if not same(form.get("csrf_token"), expected):
        raise CsrfRefused
    opened = await console.sign_in(
        _runtime(request), form.get("name")[:100], form.get("password")[:1000]
    )
    if opened is None:
        return _sign_in_form(request, "Wrong name or password.", 401)
    token, _ = opened
    response = redirect(request, _safe_back(form.get("next"), PREFIX))
    lifetime = int(console.SESSION_LIFETIME.total_seconds())
    _set_cookie(request, response, SESSION_COOKIE, _signer(request).sign(token), lifetime)
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, signed: Operator, form: CheckedForm) -> Response:
    await console.sign_out(_runtime(request), signed)
    response = redirect(request, f"{PREFIX}/sign-in", "Signed out.")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


# --- overview ---------------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, signed: Operator) -> Response:
    found = await console.overview(_runtime(request), embedded=_embedded(request))
    return render(request, "overview.html", signed, overview=found)


# --- drivers ----------------------------------------------------------------------------------


@router.get("/drivers")
async def drivers(request: Request, signed: Operator) -> Response:
    async with _runtime(request).db.snapshot() as session:
        found, counts = await console.drivers(session)
    return render(request, "drivers.html", signed, drivers=found, counts=counts, now=_now())


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("/drivers/{driver_id}/endpoint")
async def set_endpoint(
    request: Request, driver_id: RowId, signed: Operator, form: CheckedForm
) -> Response:
    enabled = form.get("enabled") == "true"

    async def work() -> str:
        driver = await console.set_endpoint(
            _runtime(request), signed.operator, driver_id, enabled=enabled
        )
        return f"Endpoint of {driver.name} {'enabled' if enabled else 'disabled'}."

    return await _act(request, f"{PREFIX}/drivers", work)


@router.post("/drivers/{driver_id}/rotate-secret")
async def rotate_secret(
    request: Request, driver_id: RowId, signed: Operator, form: CheckedForm
) -> Response:
    async def work() -> str:
        try:
            overlap = float(form.get("overlap_hours", "24") or "24")
        except ValueError:
            overlap = -1.0
        driver = await console.rotate_secret(
            _runtime(request),
            signed.operator,
            driver_id,
            form.get("secret"),
            overlap_hours=overlap if math.isfinite(overlap) else -1.0,
        )
        return f"New signing secret set for {driver.name}; the old one signs for {overlap:g} h."

    return await _act(request, f"{PREFIX}/drivers", work)


# --- communities ------------------------------------------------------------------------------


@router.get("/communities")
async def communities(request: Request, signed: Operator) -> Response:
    search = request.query_params.get("q", "")[:100]
    page = _page(request.query_params.get("page"))
    async with _runtime(request).db.snapshot() as session:
        found = await console.communities(
            session, search=search or None, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
    return render(
        request,
        "communities.html",
        signed,
        communities=found[:PAGE_SIZE],
        search=search,
        page=page,
        more=len(found) > PAGE_SIZE,
        query=lambda **kw: urlencode({"q": search, **kw}),
    )


@router.get("/communities/{slug}")
async def community(request: Request, slug: str, signed: Operator) -> Response:
    runtime = _runtime(request)
    async with runtime.db.snapshot() as session:
        found = await console.community(session, runtime, slug[:64])
    if found is None:
        return render(
            request, "not_found.html", signed, status_code=404, what=f"community {slug!r}"
        )
    return render(request, "community.html", signed, view=found)


# --- deliveries -------------------------------------------------------------------------------

DELIVERY_STATUSES = ("pending", "failing", "succeeded", "dead")


@router.get("/deliveries")
async def deliveries(request: Request, signed: Operator) -> Response:
    params = request.query_params
    driver_id = _int(params.get("driver"))
    community_slug = params.get("community", "")[:64].strip()
    status = params.get("status", "")
    status = status if status in DELIVERY_STATUSES else ""
    page = _page(params.get("page"))
    async with _runtime(request).db.snapshot() as session:
        drivers_found, _ = await console.drivers(session)
        rows = await console.deliveries(
            session,
            driver_id=driver_id,
            community=community_slug or None,
            status=status or None,
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
        )
    filters = {"driver": driver_id or "", "community": community_slug, "status": status}
    return render(
        request,
        "deliveries.html",
        signed,
        rows=rows[:PAGE_SIZE],
        drivers=drivers_found,
        filters=filters,
        statuses=DELIVERY_STATUSES,
        page=page,
        more=len(rows) > PAGE_SIZE,
        back=str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        query=lambda **kw: urlencode({**filters, **kw}),
    )


@router.get("/deliveries/{delivery_id}")
async def delivery(request: Request, delivery_id: RowId, signed: Operator) -> Response:
    async with _runtime(request).db.snapshot() as session:
        found = await console.delivery(session, delivery_id)
    if found is None:
        return render(
            request, "not_found.html", signed, status_code=404, what=f"delivery {delivery_id}"
        )
    row, failures = found
    return render(request, "delivery.html", signed, row=row, failures=failures)


@router.post("/deliveries/replay")
async def replay(request: Request, signed: Operator, form: CheckedForm) -> Response:
    back = _safe_back(form.get("back"), f"{PREFIX}/deliveries")

    async def work() -> str:
        only = _int(form.get("only"))
        chosen = [only] if only else [i for i in map(_int, form.all("delivery_id")) if i]
        since = _parse_time(form.get("since"))
        if form.get("since") and since is None:
            raise BadRequest("since: a date and time such as 2026-11-30T09:00 (UTC)")
        count = await console.replay(
            _runtime(request),
            signed.operator,
            delivery_ids=chosen,
            since=since if not chosen else None,
            driver_id=_int(form.get("driver")),
        )
        return f"{count} {'delivery' if count == 1 else 'deliveries'} queued to be sent again."

    return await _act(request, back, work)


def _parse_time(value: str) -> datetime | None:
    """A time from a ``datetime-local`` field (read as UTC) or ISO 8601 with a zone."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


# --- inbox ------------------------------------------------------------------------------------


@router.get("/inbox")
async def inbox(request: Request, signed: Operator) -> Response:
    async with _runtime(request).db.snapshot() as session:
        rows, counts = await console.troubled_webhooks(session)
    return render(request, "inbox.html", signed, rows=rows, counts=counts)


@router.post("/inbox/{inbox_id}/retry")
async def retry_webhook(
    request: Request, inbox_id: RowId, signed: Operator, form: CheckedForm
) -> Response:
    async def work() -> str:
        await console.retry_webhook(_runtime(request), signed.operator, inbox_id)
        return f"Webhook {inbox_id} will be handled again."

    return await _act(request, f"{PREFIX}/inbox", work)


# --- processes --------------------------------------------------------------------------------

PROCESS_STATUSES = tuple(s.value for s in ProcessStatus)


@router.get("/processes")
async def processes_page(request: Request, signed: Operator) -> Response:
    params = request.query_params
    status = params.get("status", "")
    status = status if status in PROCESS_STATUSES else ""
    plugin = params.get("plugin", "")[:64]
    page = _page(params.get("page"))
    async with _runtime(request).db.snapshot() as session:
        rows, plugins = await console.process_list(
            session,
            status=status or None,
            plugin=plugin or None,
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
        )
    filters = {"status": status, "plugin": plugin}
    return render(
        request,
        "processes.html",
        signed,
        rows=rows[:PAGE_SIZE],
        plugins=plugins,
        statuses=PROCESS_STATUSES,
        open_statuses=(ProcessStatus.CREATED.value, ProcessStatus.PENDING.value),
        filters=filters,
        page=page,
        more=len(rows) > PAGE_SIZE,
        back=str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        query=lambda **kw: urlencode({**filters, **kw}),
    )


@router.post("/processes/{process_id}/close")
async def close_process(
    request: Request, process_id: RowId, signed: Operator, form: CheckedForm
) -> Response:
    back = _safe_back(form.get("back"), f"{PREFIX}/processes")

    async def work() -> str:
        await console.close_process(_runtime(request), signed.operator, process_id)
        return f"Process {process_id} closed."

    return await _act(request, back, work)


# --- audit log --------------------------------------------------------------------------------


@router.get("/audit")
async def audit(request: Request, signed: Operator) -> Response:
    page = _page(request.query_params.get("page"))
    async with _runtime(request).db.snapshot() as session:
        entries = await console.audit_log(
            session, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
    return render(
        request,
        "audit.html",
        signed,
        entries=entries[:PAGE_SIZE],
        page=page,
        more=len(entries) > PAGE_SIZE,
        query=lambda **kw: urlencode(kw),
    )


# --- wiring -----------------------------------------------------------------------------------


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    if request.method != "GET":
        target = PREFIX
    return RedirectResponse(
        f"{PREFIX}/sign-in?{urlencode({'next': target})}",
        status_code=303,
        headers=SECURITY_HEADERS,
    )


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return render(request, "csrf.html", None, status_code=403)


def install(app: FastAPI, secret_keys: list[str]) -> None:
    """Add the console to ``app``: its pages, its stylesheet, and its two answers (the sign-in
    redirect, the CSRF refusal)."""
    app.state.console_signer = CookieSigner(secret_keys)
    app.state.console_limiter = SignInLimiter()
    app.include_router(router)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(directory=str(files("metagov.console").joinpath("static"))),
        name="console-static",
    )
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
