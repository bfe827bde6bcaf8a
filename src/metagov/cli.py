"""The ``metagov`` command: run the gateway and administer it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from metagov import preflight
from metagov.config import Settings, describe_errors
from metagov.crypto import SecretBox
from metagov.db.engine import Session
from metagov.errors import MetagovError
from metagov.outbox import service as outbox
from metagov.tenancy import service as tenancy

T = TypeVar("T")

app = typer.Typer(help="Metagov governance gateway.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
drivers_app = typer.Typer(help="Drivers and their API keys.", no_args_is_help=True)
plugins_app = typer.Typer(help="Installed plugins.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys that encrypt plugin secrets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(drivers_app, name="drivers")
app.add_typer(plugins_app, name="plugins")
deliveries_app = typer.Typer(help="Event deliveries to Drivers.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(deliveries_app, name="deliveries")
operators_app = typer.Typer(help="Operators of the web console (/console).", no_args_is_help=True)
app.add_typer(operators_app, name="operators")


def _error(message: str) -> None:
    typer.secho(f"metagov: {message}", fg=typer.colors.RED, err=True)


def _settings() -> Settings:
    """The settings, or one line per invalid one (naming its variable) and exit status 2."""
    try:
        return Settings()
    except ValidationError as exc:
        for line in describe_errors(exc):
            _error(f"invalid setting {line}")
        raise typer.Exit(2) from None


def _run(make: Callable[[], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run a command's coroutine; a server that cannot be reached, or a schema this version does
    not know, ends it with one line instead of a traceback."""
    from alembic.util.exc import CommandError
    from redis.exceptions import RedisError

    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except preflight.StartupError as exc:
        _error(str(exc))
    except CommandError as exc:
        _error(f"cannot migrate the database at METAGOV_DATABASE_URL: {exc}")
    except Exception as exc:
        if settings is None or not preflight.is_connection_failure(exc):
            raise
        if isinstance(exc, RedisError):
            _error(str(preflight.redis_error(settings, exc)))
        else:
            _error(str(preflight.database_error(settings, exc)))
    raise typer.Exit(1)


def _setup_logging(settings: Settings) -> None:
    """Tracing first (the log lines then carry trace ids when it is on), then logging."""
    from metagov import logs, tracing

    try:
        tracing.configure()
    except tracing.TracingConfigError as exc:
        _error(f"invalid setting {exc}")
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, settings.log_format)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on", min=1, max=65535)] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="API processes; default: one per core in production, one otherwise",
        ),
    ] = None,
) -> None:
    """Run the gateway (and, without Redis, its jobs in the same process)."""
    import os

    import uvicorn

    from metagov.app import create_app
    from metagov.db import migrate

    settings = _settings()
    _setup_logging(settings)

    async def check() -> None:
        await preflight.check_serve(settings)
        if settings.auto_migrate:  # here, once, so that a failure is one line
            await migrate.upgrade(settings.database_url)

    _run(check, settings)
    count = workers or ((os.cpu_count() or 1) if settings.environment == "production" else 1)
    # Logging is configured above; uvicorn logs through it instead of its own setup.
    # uvicorn's own access log would print query strings (OAuth codes); the app logs requests.
    if count == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
        return
    # Migrated above: processes migrating at the same time would race.
    os.environ["METAGOV_AUTO_MIGRATE"] = "false"
    uvicorn.run(
        "metagov.app:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=count,
        log_config=None,
        access_log=False,
    )


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Stop once the queue is empty")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics, /healthz and /readyz on this port", min=1, max=65535
        ),
    ] = None,
) -> None:
    """Run an arq worker: deliveries, webhook handling, process deadlines, periodic tasks."""
    from metagov.jobs.worker import WorkerState, build_worker

    settings = _settings()
    _setup_logging(settings)
    if not settings.redis_url:
        _error("METAGOV_REDIS_URL is not set: workers take their jobs from Redis")
        raise typer.Exit(2)
    _run(lambda: preflight.check_worker(settings), settings)
    state = WorkerState()
    if metrics_port is not None:
        from metagov.jobs.status import serve_status

        try:
            serve_status(metrics_port, state)
        except OSError as exc:
            _error(f"cannot serve metrics on port {metrics_port}: {exc.strerror or exc}")
            raise typer.Exit(1) from None
    build_worker(settings, burst=burst, state=state).run()


@app.command()
def doctor() -> None:
    """Check the settings, database, schema, Redis, workers and Drivers' endpoints; say what is
    wrong in plain words. Exit 1 if anything stops the gateway from doing its work."""
    from metagov.health.doctor import Level, examine

    settings = _settings()
    findings = _run(lambda: examine(settings), settings)
    for finding in findings:
        colour = {Level.OK: None, Level.WARNING: typer.colors.YELLOW}.get(
            finding.level, typer.colors.RED
        )
        typer.secho(finding.line(), fg=colour)
    problems = sum(finding.level is Level.PROBLEM for finding in findings)
    if problems:
        typer.echo(f"{problems} problem(s) found")
        raise typer.Exit(1)
    typer.echo("no problem found")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or upgrade the schema."""
    from metagov.db import migrate

    settings = _settings()

    async def upgrade() -> None:
        await preflight.check_database(settings)
        await migrate.upgrade(settings.database_url, revision)

    _run(upgrade, settings)
    typer.echo(f"database at {revision}")


@db_app.command("check")
def db_check() -> None:
    """Exit 1 unless the schema is at the newest revision."""
    from metagov.db import migrate
    from metagov.db.engine import Database

    settings = _settings()

    async def current() -> str | None:
        db = Database(settings.database_url)
        try:
            return await migrate.current_revision(db.engine)
        finally:
            await db.dispose()

    now, head = _run(current, settings), migrate.head_revision()
    if now != head:
        typer.echo(f"database at {now}, newest is {head}: run `metagov db upgrade`")
        raise typer.Exit(1)
    typer.echo(f"database at {head} (up to date)")


def _with_session(work: Callable[..., Awaitable[T]]) -> T:
    """Run ``work`` in one transaction against the configured database. Jobs it rings are left
    to the sweep of a running gateway or worker."""
    from metagov.db.engine import Database

    settings = _settings()

    async def go() -> T:
        from metagov.db import migrate

        db = Database(settings.database_url)
        try:
            if not await migrate.schema_is_current(db.engine):
                typer.secho(
                    "the database schema is missing or old: run `metagov db upgrade` first",
                    fg=typer.colors.RED,
                    err=True,
                )
                raise typer.Exit(1)
            async with db.transaction() as session:
                return await work(session)
        finally:
            await db.dispose()

    return _run(go, settings)


def _box(settings: Settings) -> SecretBox:
    return SecretBox([k.get_secret_value() for k in settings.secret_keys])


def _fail(exc: MetagovError) -> typer.Exit:
    typer.secho(exc.detail, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@drivers_app.command("create")
def drivers_create(
    name: str,
    event_url: Annotated[str | None, typer.Option(help="Where the Driver receives events")] = None,
) -> None:
    """Create a Driver; print its API key and its event signing secret (shown this once only)."""
    box = _box(_settings())
    try:
        tenancy.check_driver_name(name)
        new = _with_session(lambda s: tenancy.create_driver(s, box, name, event_url=event_url))
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"Driver {name!r} created. Store these now; they are not shown again.")
    typer.echo(f"API key (Authorization: Bearer ...): {new.api_key}")
    typer.echo(f"Event signing secret (Standard Webhooks): {new.webhook_secret}")


@drivers_app.command("list")
def drivers_list() -> None:
    """List Drivers."""
    for d in _with_session(tenancy.list_drivers):
        state = f"revoked {d.revoked_at:%Y-%m-%d}" if d.revoked_at else "active"
        if d.endpoint_disabled_at:
            state += ", endpoint disabled (410)"
        typer.echo(f"{d.name}\t{state}\t{d.event_url or '-'}")


@drivers_app.command("revoke")
def drivers_revoke(name: str) -> None:
    """Revoke a Driver's API key; its requests get 401 from now on."""
    try:
        _with_session(lambda s: tenancy.revoke_driver(s, name))
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"Driver {name!r} revoked")


@drivers_app.command("set-event-url")
def drivers_set_event_url(name: str, event_url: str) -> None:
    """Change where a Driver receives events; this also re-enables an endpoint disabled by a 410,
    and its waiting events go out."""

    async def work(session: Session) -> None:
        driver = await tenancy.get_driver(session, name)
        await tenancy.set_event_url(session, driver, event_url)

    try:
        _with_session(work)
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"Driver {name!r} now receives events at {event_url}")


@drivers_app.command("rotate-secret")
def drivers_rotate_secret(
    name: str,
    overlap_hours: Annotated[
        float, typer.Option(help="How long events are also signed with the old secret")
    ] = 24.0,
) -> None:
    """Give a Driver a new event signing secret, printed once."""
    box = _box(_settings())

    async def work(session: Session) -> str:
        driver = await tenancy.get_driver(session, name)
        overlap = timedelta(hours=overlap_hours)
        return await tenancy.rotate_webhook_secret(session, box, driver, overlap=overlap)

    try:
        secret = _with_session(work)
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"New event signing secret (the old one also signs for {overlap_hours} h):")
    typer.echo(secret)


@deliveries_app.command("list")
def deliveries_list(
    dead: Annotated[bool, typer.Option("--dead", help="Only deliveries given up")] = False,
    limit: int = 100,
) -> None:
    """List deliveries, newest first."""
    status = "dead" if dead else None
    found = _with_session(lambda s: outbox.list_deliveries(s, status=status, limit=limit))
    for d in found:
        typer.echo(
            f"{d.id}\tevent {d.event_id}\t{d.status}\tattempts {d.attempts}\t"
            f"{d.last_status_code or '-'}\t{d.url}\t{d.last_error or ''}"
        )


@deliveries_app.command("replay")
def deliveries_replay(
    delivery_id: Annotated[int | None, typer.Argument(help="One delivery to send again")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Replay every dead delivery created since then")
    ] = None,
) -> None:
    """Send a delivery again (with its original webhook-id), or every dead one since a time."""
    if (delivery_id is None) == (since is None):
        typer.secho("give either a delivery id or --since", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    try:
        found = _with_session(lambda s: outbox.replay(s, delivery_id=delivery_id, since=when))
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"{len(found)} deliveries queued again; a running gateway or worker sends them")


@plugins_app.command("list")
def plugins_list() -> None:
    """List the plugins this gateway loads, and any it refused."""
    from metagov.plugins.registry import PluginRegistry

    settings = _settings()
    registry = PluginRegistry.discover(allow=settings.plugins_allow, block=settings.plugins_block)
    for spec in registry:
        actions = ", ".join(spec.actions) or "-"
        processes = ", ".join(spec.processes) or "-"
        typer.echo(f"{spec.name}\tactions: {actions}\tprocesses: {processes}\t({spec.source})")
    for source, error in registry.failures.items():
        typer.secho(f"refused {source}: {error}", fg=typer.colors.RED)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new key for METAGOV_SECRET_KEYS."""
    from metagov.crypto import generate_key

    typer.echo(generate_key())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret with the first key of METAGOV_SECRET_KEYS."""
    from metagov.instances.service import rotate_secrets

    settings = _settings()
    box = SecretBox([k.get_secret_value() for k in settings.secret_keys])
    count = _with_session(lambda s: rotate_secrets(s, box))
    typer.echo(f"re-encrypted the secrets of {count} plugin instance(s) and driver(s)")


def _password_from_stdin(wanted: bool) -> str | None:
    """The password piped on standard input (its first line), with ``--password-stdin``."""
    if not wanted:
        return None
    import sys

    return sys.stdin.readline().rstrip("\r\n")


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (at least 12 characters) instead of "
        "generating one",
    ),
]


@operators_app.command("create")
def operators_create(name: str, password_stdin: PasswordStdin = False) -> None:
    """Create a console operator; print a generated password once, or take one from stdin."""
    from metagov.console import service as console

    given = _password_from_stdin(password_stdin)
    try:
        password = _with_session(lambda s: console.create_operator(s, name, given))
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"Operator {name!r} created; sign in at /console.")
    if given is None:
        typer.echo("Password (shown this once; only its hash is stored):")
        typer.echo(password)


@operators_app.command("set-password")
def operators_set_password(name: str, password_stdin: PasswordStdin = False) -> None:
    """Give an operator a new password (printed once, or read from stdin); their sessions end."""
    from metagov.console import service as console

    given = _password_from_stdin(password_stdin)
    try:
        password = _with_session(lambda s: console.set_password(s, name, given))
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"Operator {name!r} has a new password; their sessions were ended.")
    if given is None:
        typer.echo(password)


@operators_app.command("list")
def operators_list() -> None:
    """List console operators."""
    from metagov.console import service as console

    for operator in _with_session(console.list_operators):
        last = f"{operator.last_sign_in_at:%Y-%m-%d %H:%M} UTC" if operator.last_sign_in_at else "-"
        typer.echo(f"{operator.name}\tlast sign-in {last}")


@operators_app.command("remove")
def operators_remove(name: str) -> None:
    """Remove a console operator; their sessions end at once."""
    from metagov.console import service as console

    try:
        _with_session(lambda s: console.remove_operator(s, name))
    except MetagovError as exc:
        raise _fail(exc) from None
    typer.echo(f"Operator {name!r} removed")
