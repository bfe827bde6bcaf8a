"""Each API operation as data: the request to send and how to read its answer.

The sync and async clients differ only in how they send a request, so every operation is built
here once and both clients run it; neither holds any knowledge of routes or JSON shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    LinkedAccount,
    LinkQuality,
    LinkType,
    Plugin,
    PluginMetadata,
    PluginsArg,
    Process,
    ProcessStatus,
    User,
    UsersPage,
    plugins_json,
)

T = TypeVar("T")

COMMUNITY_HEADER = "X-Metagov-Community"
_ABSENT: Any = object()

QueryParams = Mapping[str, str | int | list[str]]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: method, path, optional JSON body, query and community header, and the
    function that turns a successful response into the result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = _ABSENT
    params: QueryParams | None = None
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


# Identity (MetagovIDs and linked accounts). These routes name the community in the body or the
# query, not in the community header.

IDENTITY = "/api/internal/identity"


def _user(response: httpx.Response) -> User:
    return User.from_json(response.json())


def _linked_account(response: httpx.Response) -> LinkedAccount:
    return LinkedAccount.from_json(response.json())


def _ids(response: httpx.Response) -> list[str]:
    return [str(i) for i in response.json()]


def _account_filter(
    *,
    platform_type: str | None,
    platform_identifier: str | None,
    community_platform_id: str | None,
    link_type: LinkType | None,
    link_quality: LinkQuality | None,
) -> dict[str, str | int | list[str]]:
    """The filters of ``get_users`` and ``filter_users_by_account``, those given. An empty
    ``community_platform_id`` is sent: it matches accounts without one."""
    given = {
        "platform_type": platform_type,
        "platform_identifier": platform_identifier,
        "community_platform_id": community_platform_id,
        "link_type": link_type,
        "link_quality": link_quality,
    }
    return {name: value for name, value in given.items() if value is not None}


def create_ids(community: str, count: int) -> Call[list[str]]:
    body = {"community": community, "count": count}
    return Call("POST", f"{IDENTITY}/create_id", _ids, body=body)


def merge_ids(primary_id: str, secondary_id: str) -> Call[User]:
    body = {"primary_id": primary_id, "secondary_id": secondary_id}
    return Call("POST", f"{IDENTITY}/merge_ids", _user, body=body)


def link_account(
    metagov_id: str,
    community: str,
    platform_type: str,
    platform_identifier: str,
    *,
    community_platform_id: str | None,
    custom_data: Mapping[str, Any] | None,
    link_type: LinkType | None,
    link_quality: LinkQuality | None,
) -> Call[LinkedAccount]:
    body: dict[str, Any] = {
        "id": metagov_id,
        "community": community,
        "platform_type": platform_type,
        "platform_identifier": platform_identifier,
    }
    if community_platform_id is not None:
        body["community_platform_id"] = community_platform_id
    if custom_data is not None:
        body["custom_data"] = dict(custom_data)
    if link_type is not None:
        body["link_type"] = link_type
    if link_quality is not None:
        body["link_quality"] = link_quality
    return Call("POST", f"{IDENTITY}/link_account", _linked_account, body=body)


def unlink_account(
    community: str,
    platform_type: str,
    platform_identifier: str,
    *,
    community_platform_id: str | None,
) -> Call[LinkedAccount]:
    body: dict[str, Any] = {
        "community": community,
        "platform_type": platform_type,
        "platform_identifier": platform_identifier,
    }
    if community_platform_id is not None:
        body["community_platform_id"] = community_platform_id
    return Call("POST", f"{IDENTITY}/unlink_account", _linked_account, body=body)


def get_user(metagov_id: str) -> Call[User]:
    return Call("GET", f"{IDENTITY}/get_user", _user, params={"id": metagov_id})


def get_users(
    community: str,
    *,
    platform_type: str | None,
    platform_identifier: str | None,
    community_platform_id: str | None,
    link_type: LinkType | None,
    link_quality: LinkQuality | None,
    after: str | None,
    limit: int | None,
) -> Call[UsersPage]:
    params = _account_filter(
        platform_type=platform_type,
        platform_identifier=platform_identifier,
        community_platform_id=community_platform_id,
        link_type=link_type,
        link_quality=link_quality,
    )
    params["community"] = community
    if after is not None:
        params["after"] = after
    if limit is not None:
        params["limit"] = limit
    return Call(
        "GET", f"{IDENTITY}/get_users", lambda r: UsersPage.from_json(r.json()), params=params
    )


def filter_users_by_account(
    metagov_ids: Sequence[str],
    *,
    platform_type: str | None,
    platform_identifier: str | None,
    community_platform_id: str | None,
    link_type: LinkType | None,
    link_quality: LinkQuality | None,
) -> Call[list[str]]:
    if isinstance(metagov_ids, str):
        raise TypeError("`ids` is a list of MetagovIDs, not one string")
    params = _account_filter(
        platform_type=platform_type,
        platform_identifier=platform_identifier,
        community_platform_id=community_platform_id,
        link_type=link_type,
        link_quality=link_quality,
    )
    params["ids"] = list(metagov_ids)  # one `ids=` query parameter per id
    return Call("GET", f"{IDENTITY}/filter_users_by_account", _ids, params=params)


def get_linked_account(
    metagov_id: str, platform_type: str, *, community_platform_id: str | None
) -> Call[LinkedAccount]:
    params: dict[str, str | int | list[str]] = {"id": metagov_id, "platform_type": platform_type}
    if community_platform_id is not None:
        params["community_platform_id"] = community_platform_id
    return Call("GET", f"{IDENTITY}/get_linked_account", _linked_account, params=params)
