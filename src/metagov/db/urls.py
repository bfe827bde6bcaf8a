"""Database URLs as operators write them, and as the gateway shows them."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# The async drivers the gateway runs on, by backend; a URL without a driver gets this one.
_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}


def normalize_database_url(value: str) -> str:
    """The async URL for ``value``: ``postgresql://`` and ``sqlite://`` (what most tools print)
    get the async driver the gateway runs on; another driver or database is refused here, in
    one sentence, rather than as an import error deep in SQLAlchemy."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected postgresql://user:password@host:5432/db "
            "or sqlite:///./metagov.db"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":  # Heroku's and libpq's alias
        backend = "postgresql"
    wanted = _ASYNC_DRIVERS.get(backend)
    if wanted is None:
        raise ValueError(f"database {backend!r} is not supported; use postgresql:// or sqlite:///")
    if driver and driver != wanted:
        raise ValueError(
            f"driver {driver!r} is not supported; use {backend}+{wanted}:// (or plain {backend}://)"
        )
    return url.set(drivername=f"{backend}+{wanted}").render_as_string(hide_password=False)


def shown_database_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)
