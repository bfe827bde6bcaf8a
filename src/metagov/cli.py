"""The ``metagov`` command: run the gateway and administer it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from metagov.config import Settings

T = TypeVar("T")

app = typer.Typer(help="Metagov governance gateway.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
drivers_app = typer.Typer(help="Drivers and their API keys.", no_args_is_help=True)
plugins_app = typer.Typer(help="Installed plugins.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys that encrypt plugin secrets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(drivers_app, name="drivers")
app.add_typer(plugins_app, name="plugins")
app.add_typer(keys_app, name="keys")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        typer.secho(f"invalid settings:\n{exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Run the gateway (and, without Redis, its jobs in the same process)."""
    import uvicorn

    from metagov.app import create_app

    settings = _settings()
    _setup_logging(settings)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or upgrade the schema."""
    from metagov.db import migrate

    settings = _settings()
    _run(lambda: migrate.upgrade(settings.database_url, revision))
    typer.echo(f"database at {revision}")


@db_app.command("check")
def db_check() -> None:
    """Exit 1 unless the schema is at the newest revision."""
    from metagov.db import migrate
    from metagov.db.engine import create_engine

    settings = _settings()

    async def current() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    now, head = _run(current), migrate.head_revision()
    if now != head:
        typer.echo(f"database at {now}, newest is {head}: run `metagov db upgrade`")
        raise typer.Exit(1)
    typer.echo(f"database at {head} (up to date)")


def _with_session(work: Callable[..., Awaitable[T]]) -> T:
    from metagov.db.engine import create_engine, create_session_factory

    settings = _settings()

    async def go() -> T:
        from metagov.db import migrate

        engine = create_engine(settings.database_url)
        try:
            if not await migrate.schema_is_current(engine):
                typer.secho(
                    "the database schema is missing or old: run `metagov db upgrade` first",
                    fg=typer.colors.RED,
                    err=True,
                )
                raise typer.Exit(1)
            async with create_session_factory(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return _run(go)


@drivers_app.command("create")
def drivers_create(
    name: str,
    event_url: Annotated[str | None, typer.Option(help="Where the Driver receives events")] = None,
) -> None:
    """Create a Driver and print its API key (shown this once only)."""
    from metagov.errors import MetagovError
    from metagov.services import drivers

    try:
        _, key = _with_session(lambda s: drivers.create_driver(s, name, event_url=event_url))
    except MetagovError as exc:
        typer.secho(exc.detail, fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Driver {name!r} created. Its API key (store it now, it is not shown again):")
    typer.echo(key)


@drivers_app.command("list")
def drivers_list() -> None:
    """List Drivers."""
    from metagov.services import drivers

    rows = _with_session(drivers.list_drivers)
    for d in rows:
        state = f"revoked {d.revoked_at:%Y-%m-%d}" if d.revoked_at else "active"
        typer.echo(f"{d.name}\t{state}\t{d.event_url or '-'}")


@drivers_app.command("revoke")
def drivers_revoke(name: str) -> None:
    """Revoke a Driver's API key; its requests get 401 from now on."""
    from metagov.errors import MetagovError
    from metagov.services import drivers

    try:
        _with_session(lambda s: drivers.revoke_driver(s, name))
    except MetagovError as exc:
        typer.secho(exc.detail, fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Driver {name!r} revoked")


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
    from metagov.crypto import SecretBox
    from metagov.services.plugins import rotate_secrets

    settings = _settings()
    box = SecretBox([k.get_secret_value() for k in settings.secret_keys])
    count = _with_session(lambda s: rotate_secrets(s, box))
    typer.echo(f"re-encrypted the secrets of {count} plugin instance(s)")
