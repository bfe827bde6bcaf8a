"""The ``twitter`` alias runs on the same fake X, gateway and Driver as the ``x`` tests."""

from tests.plugins.x.conftest import (  # noqa: F401
    app_settings,
    driver,
    events,
    gateway_settings,
    gw,
)
