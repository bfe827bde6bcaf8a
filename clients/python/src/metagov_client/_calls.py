"""Each API operation as data: the request to send and how to read its answer.

The sync and async clients differ only in how they send a request, so every operation is built
here once and both clients run it; neither holds any knowledge of routes or JSON shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from metagov_client.models import (
    Community,
    Delivery,
    DeliveryStatus,
    Event,
    Plugin,
    PluginMetadata,
    PluginsArg,
    Process,
    ProcessStatus,
    plugins_json,
)

T = TypeVar("T")

COMMUNITY_HEADER = "X-Metagov-Community"
_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: method, path, optional JSON body, query and community header, and the
    function that turns a successful response into the result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = _ABSENT
    params: Mapping[str, str | int] | None = None
    community: str | None = None

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.body is not _ABSENT:
            kwargs["json"] = self.body
        if self.params:
            kwargs["params"] = dict(self.params)
        if self.community is not None:
            kwargs["headers"] = {COMMUNITY_HEADER: self.community}
        return kwargs


def _seg(value: str | int) -> str:
    """A path segment, escaped: slugs and names are validated by the gateway, but a stray ``/``
    must not reach a different route."""
    return quote(str(value), safe="")


def _none(_: httpx.Response) -> None:
    return None


def _json_or_none(response: httpx.Response) -> Any:
    """An action's result: its JSON, or ``None`` for the 204 of actions that return nothing."""
    return None if response.status_code == 204 or not response.content else response.json()


def _community(response: httpx.Response) -> Community:
    return Community.from_json(response.json())


def _plugin(response: httpx.Response) -> Plugin:
    return Plugin.from_json(response.json())


def _process(response: httpx.Response) -> Process:
    return Process.from_json(response.json())


def _processes(response: httpx.Response) -> list[Process]:
    return [Process.from_json(p) for p in response.json()]


def _events(response: httpx.Response) -> list[Event]:
    return [Event.from_json(e) for e in response.json()]


def _delivery(response: httpx.Response) -> Delivery:
    return Delivery.from_json(response.json())


def _deliveries(response: httpx.Response) -> list[Delivery]:
    return [Delivery.from_json(d) for d in response.json()]


def _subscriptions(response: httpx.Response) -> list[str] | None:
    types = response.json().get("event_types")
    return None if types is None else [str(t) for t in types]


def _split_process_name(process: str) -> tuple[str, str]:
    plugin, dot, slug = process.partition(".")
    if not dot or not plugin or not slug:
        raise ValueError(f"a process is named '<plugin>.<process>', not {process!r}")
    return plugin, slug


def _process_path(process: str, process_id: int | None = None) -> str:
    plugin, slug = _split_process_name(process)
    path = f"/api/internal/process/{_seg(plugin)}.{_seg(slug)}"
    return path if process_id is None else f"{path}/{int(process_id)}"


def _platform(community_platform_id: str | None) -> dict[str, str | int] | None:
    if community_platform_id is None:
        return None
    return {"community_platform_id": community_platform_id}


# Communities


def get_community(slug: str) -> Call[Community]:
    return Call("GET", f"/api/internal/community/{_seg(slug)}", _community)


def create_community(
    slug: str | None, readable_name: str, plugins: PluginsArg | None
) -> Call[Community]:
    body: dict[str, Any] = {"readable_name": readable_name}
    if slug is not None:
        body["slug"] = slug
    if plugins is not None:
        body["plugins"] = plugins_json(plugins)
    return Call("POST", "/api/internal/community", _community, body=body)


def update_community(
    slug: str, *, new_slug: str | None, readable_name: str | None, plugins: PluginsArg | None
) -> Call[Community]:
    body: dict[str, Any] = {}
    if new_slug is not None:
        body["slug"] = new_slug
    if readable_name is not None:
        body["readable_name"] = readable_name
    if plugins is not None:
        body["plugins"] = plugins_json(plugins)
    return Call("PUT", f"/api/internal/community/{_seg(slug)}", _community, body=body)


def delete_community(slug: str) -> Call[None]:
    return Call("DELETE", f"/api/internal/community/{_seg(slug)}", _none)


# Plugins


def enable_plugin(community: str, name: str, config: Mapping[str, Any]) -> Call[Plugin]:
    path = f"/api/internal/plugin/{_seg(name)}"
    return Call("POST", path, _plugin, body=dict(config), community=community)


def configure_plugin(
    community: str, name: str, instance_id: int, config: Mapping[str, Any]
) -> Call[Plugin]:
    path = f"/api/internal/plugin/{_seg(name)}/{int(instance_id)}"
    return Call("PUT", path, _plugin, body=dict(config), community=community)


def disable_plugin(community: str, name: str, instance_id: int) -> Call[None]:
    path = f"/api/internal/plugin/{_seg(name)}/{int(instance_id)}"
    return Call("DELETE", path, _none, community=community)


def plugin_metadata(name: str) -> Call[PluginMetadata]:
    return Call(
        "GET",
        f"/api/internal/plugin/{_seg(name)}/metadata",
        lambda r: PluginMetadata.from_json(r.json()),
    )


def plugin_schemas() -> Call[dict[str, dict[str, Any]]]:
    return Call("GET", "/api/internal/plugin-schemas", lambda r: dict(r.json()))


# Actions


def perform_action(
    community: str,
    action: str,
    parameters: Mapping[str, Any] | None,
    *,
    community_platform_id: str | None,
    public: bool,
) -> Call[Any]:
    plugin, slug = _split_process_name(action)
    prefix = "/api/action" if public else "/api/internal/action"
    return Call(
        "POST",
        f"{prefix}/{_seg(plugin)}.{_seg(slug)}",
        _json_or_none,
        body={"parameters": dict(parameters or {})},
        params=_platform(community_platform_id),
        community=community,
    )


# Processes


def start_process(
    community: str,
    process: str,
    parameters: Mapping[str, Any] | None,
    *,
    callback_url: str | None,
    community_platform_id: str | None,
) -> Call[Process]:
    # Unlike actions, a process's parameters go flat in the body, next to `callback_url`.
    body = dict(parameters or {})
    if callback_url is not None:
        body["callback_url"] = callback_url
    return Call(
        "POST",
        _process_path(process),
        _process,
        body=body,
        params=_platform(community_platform_id),
        community=community,
    )


def get_process(community: str, process: str, process_id: int) -> Call[Process]:
    return Call("GET", _process_path(process, process_id), _process, community=community)


def close_process(community: str, process: str, process_id: int) -> Call[Process]:
    return Call("DELETE", _process_path(process, process_id), _process, community=community)


def list_processes(
    community: str,
    *,
    status: ProcessStatus | None,
    plugin: str | None,
    limit: int,
    offset: int,
) -> Call[list[Process]]:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status
    if plugin is not None:
        params["plugin"] = plugin
    return Call("GET", "/api/internal/process", _processes, params=params, community=community)


# Events, subscriptions, deliveries


def list_events(community: str | None, *, after: int, limit: int) -> Call[list[Event]]:
    params: dict[str, str | int] = {"after": after, "limit": limit}
    return Call("GET", "/api/internal/events", _events, params=params, community=community)


def get_subscriptions(community: str) -> Call[list[str] | None]:
    return Call("GET", "/api/internal/subscriptions", _subscriptions, community=community)


def set_subscriptions(community: str, event_types: list[str] | None) -> Call[list[str] | None]:
    return Call(
        "PUT",
        "/api/internal/subscriptions",
        _subscriptions,
        body={"event_types": event_types},
        community=community,
    )


def list_deliveries(status: DeliveryStatus | None, limit: int) -> Call[list[Delivery]]:
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = status
    return Call("GET", "/api/internal/deliveries", _deliveries, params=params)


def replay_delivery(delivery_id: int) -> Call[Delivery]:
    return Call("POST", f"/api/internal/deliveries/{int(delivery_id)}/replay", _delivery)


def replay_dead_deliveries(since: datetime | None) -> Call[int]:
    if since is not None and since.tzinfo is None:
        raise ValueError("give `since` a time zone (the gateway refuses naive date-times)")
    body = {} if since is None else {"since": since.isoformat()}
    return Call(
        "POST", "/api/internal/deliveries/replay", lambda r: int(r.json()["replayed"]), body=body
    )
