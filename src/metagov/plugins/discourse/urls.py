"""The forum's address: one normal form, so that the config, the instance's
``community_platform_id`` and the ``X-Discourse-Instance`` header of every webhook compare equal
however the address was typed, and a check that the gateway is not pointed at its own network."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from metagov.plugins.sdk import PluginError

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_server_url(value: str) -> str:
    """``scheme://host[:port][/path]``: scheme and host lower-case, default port and trailing
    slash dropped. Raises ``ValueError`` for anything that is not a plain http(s) base URL."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ValueError("server_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("server_url must be an https:// URL, such as https://forum.example.org")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("server_url has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("server_url must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("server_url must not have a query or a fragment")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def same_server(header: str, server_url: str) -> bool:
    """Whether an ``X-Discourse-Instance`` header names the configured forum."""
    try:
        return normalize_server_url(header) == server_url
    except ValueError:
        return False


def check_reachable_safely(server_url: str, *, allow_http: bool, allow_private: bool) -> None:
    """Refuse URLs that would make the gateway talk in clear text or to its own network (a
    loopback, private, link-local or otherwise reserved address given literally, or
    ``localhost``), unless the gateway's settings allow it (a forum under test)."""
    parts = urlsplit(server_url)
    if parts.scheme != "https" and not allow_http:
        raise PluginError(
            "server_url must use https "
            "(METAGOV_DISCOURSE__ALLOW_HTTP allows http for a test forum)",
            code="server_url_not_allowed",
        )
    if allow_private:
        return
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise PluginError(
            "server_url must not point at this machine", code="server_url_not_allowed"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: resolved by the HTTP client
    if not address.is_global:
        raise PluginError(
            "server_url must not be a private or reserved address "
            "(METAGOV_DISCOURSE__ALLOW_PRIVATE_HOSTS allows it)",
            code="server_url_not_allowed",
        )
