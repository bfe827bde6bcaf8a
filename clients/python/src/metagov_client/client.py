"""The clients: :class:`AsyncMetagovClient` for async Drivers (FastAPI, aiohttp…) and
:class:`MetagovClient` for sync ones (Django, Flask, scripts).

Both expose the same methods with the same arguments; every operation is defined once in
:mod:`metagov_client._calls`, and each method here only sends it. Community-scoped operations take
the community's slug as their first argument (it becomes the ``X-Metagov-Community`` header).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from metagov_client import _calls
from metagov_client._calls import Call
from metagov_client._retry import RetryPolicy, parse_retry_after
from metagov_client.errors import (
    ConflictError,
    NotFoundError,
    ProcessTimeoutError,
    error_from_response,
)
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
)

T = TypeVar("T")

__version__ = "0.1.0"
USER_AGENT = f"metagov-client/{__version__}"
DEFAULT_TIMEOUT = 10.0


def _headers(api_key: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, **(extra or {})}


def _result(call: Call[T], response: httpx.Response) -> T:
    if response.is_error:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise error_from_response(response, retry_after)
    return call.parse(response)


class _Polling:
    """The schedule of :meth:`wait_for_outcome`: quick first looks, then slower ones, never past
    the deadline."""

    def __init__(self, timeout: float, interval: float, max_interval: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.interval = interval
        self.max_interval = max_interval

    def next_wait(self) -> float | None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait = min(self.interval, remaining)
        self.interval = min(self.interval * 1.5, self.max_interval)
        return wait


class AsyncMetagovClient:
    """An async client for one Driver (one API key).

    Use it as an async context manager, or call :meth:`aclose` when done, so its connections are
    closed. Errors raise :class:`~metagov_client.errors.MetagovError` subclasses carrying the
    gateway's ``code``; 429 and 503 are retried first, as ``retry`` allows.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncMetagovClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        kwargs = call.request_kwargs()
        attempt = 0
        while True:
            response = await self._http.request(call.method, call.path, **kwargs)
            delay = self.retry.delay(response, attempt)
            if delay is None:
                return _result(call, response)
            await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def is_ready(self) -> bool:
        """Whether the gateway answers ``/readyz`` with 200 (database up and migrated). Never
        raises for a gateway that is down: it is ``False`` then."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    # Communities

    async def get_community(self, slug: str) -> Community:
        """The community and its plugin instances."""
        return await self._send(_calls.get_community(slug))

    async def create_community(
        self,
        slug: str | None = None,
        *,
        readable_name: str = "",
        plugins: PluginsArg | None = None,
    ) -> Community:
        """Create a community (a UUID slug if ``slug`` is ``None``), with these plugins.
        ``ConflictError`` ``slug_taken`` if the slug is in use."""
        return await self._send(_calls.create_community(slug, readable_name, plugins))

    async def update_community(
        self,
        slug: str,
        *,
        new_slug: str | None = None,
        readable_name: str | None = None,
        plugins: PluginsArg | None = None,
    ) -> Community:
        """``PUT`` the community. ``plugins``, if given, is declarative: exactly those are
        enabled afterwards (listed ones enabled or re-configured keeping their state, others
        disabled). Arguments left ``None`` are unchanged."""
        call = _calls.update_community(
            slug, new_slug=new_slug, readable_name=readable_name, plugins=plugins
        )
        return await self._send(call)

    async def declare_community(
        self, slug: str, *, readable_name: str | None = None, plugins: PluginsArg | None = None
    ) -> Community:
        """Make the community exist with exactly this name and these plugins, whether or not it
        existed: what a Driver calls on every start. (The gateway's ``PUT`` does not create, so
        this creates on ``unknown_community``, and updates again if another process created it
        meanwhile.)"""
        try:
            return await self.update_community(slug, readable_name=readable_name, plugins=plugins)
        except NotFoundError as err:
            if err.code != "unknown_community":
                raise
        try:
            return await self.create_community(
                slug, readable_name=readable_name or "", plugins=plugins
            )
        except ConflictError as err:
            if err.code != "slug_taken":
                raise
        return await self.update_community(slug, readable_name=readable_name, plugins=plugins)

    async def delete_community(self, slug: str) -> None:
        """Delete the community with its plugin instances, processes and events."""
        await self._send(_calls.delete_community(slug))

    # Plugins

    async def enable_plugin(
        self, community: str, name: str, config: Mapping[str, Any] | None = None
    ) -> Plugin:
        """Enable a plugin (or re-configure the instance with the same platform id)."""
        return await self._send(_calls.enable_plugin(community, name, config or {}))

    async def configure_plugin(
        self, community: str, name: str, instance_id: int, config: Mapping[str, Any]
    ) -> Plugin:
        """Re-configure an instance, keeping its state and processes. Secret fields left out
        keep their stored value."""
        return await self._send(_calls.configure_plugin(community, name, instance_id, config))

    async def disable_plugin(self, community: str, name: str, instance_id: int) -> None:
        """Disable an instance; its open processes become ``cancelled``."""
        await self._send(_calls.disable_plugin(community, name, instance_id))

    async def plugin_metadata(self, name: str) -> PluginMetadata:
        """What the plugin declares: config schema, actions, processes, event types."""
        return await self._send(_calls.plugin_metadata(name))

    async def plugin_schemas(self) -> dict[str, dict[str, Any]]:
        """Every plugin's config JSON Schema, by plugin name."""
        return await self._send(_calls.plugin_schemas())

    # Actions

    async def perform_action(
        self,
        community: str,
        action: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        community_platform_id: str | None = None,
        public: bool = False,
    ) -> Any:
        """Perform ``action`` (``"plugin.action"``); its JSON result, or ``None`` for actions
        that return nothing. ``public`` uses the keyless route of actions a plugin made public."""
        call = _calls.perform_action(
            community,
            action,
            parameters,
            community_platform_id=community_platform_id,
            public=public,
        )
        return await self._send(call)

    # Processes

    async def start_process(
        self,
        community: str,
        process: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        callback_url: str | None = None,
        community_platform_id: str | None = None,
    ) -> Process:
        """Start ``process`` (``"plugin.process"``). ``callback_url`` also receives this
        process's events, signed like the Driver's."""
        call = _calls.start_process(
            community,
            process,
            parameters,
            callback_url=callback_url,
            community_platform_id=community_platform_id,
        )
        return await self._send(call)

    async def get_process(self, community: str, process: str, process_id: int) -> Process:
        """The process record."""
        return await self._send(_calls.get_process(community, process, process_id))

    async def close_process(self, community: str, process: str, process_id: int) -> Process:
        """Close the process now; its final record. ``ConflictError`` ``invalid_transition`` if
        it has ended or its platform cannot end it early."""
        return await self._send(_calls.close_process(community, process, process_id))

    async def list_processes(
        self,
        community: str,
        *,
        status: ProcessStatus | None = None,
        plugin: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Process]:
        """The community's processes, newest first."""
        call = _calls.list_processes(
            community, status=status, plugin=plugin, limit=limit, offset=offset
        )
        return await self._send(call)

    async def wait_for_outcome(
        self,
        process: Process,
        *,
        timeout: float = 60.0,
        interval: float = 0.25,
        max_interval: float = 5.0,
    ) -> Process:
        """Poll until the process has ended (completed, failed or cancelled) and return its
        final record; ``ProcessTimeoutError`` after ``timeout`` seconds. Handy in scripts and
        tests; a Driver with an event URL is told instead (``process.completed`` and others)."""
        polling = _Polling(timeout, interval, max_interval)
        while process.is_open:
            wait = polling.next_wait()
            if wait is None:
                raise ProcessTimeoutError(process, timeout)
            await asyncio.sleep(wait)
            process = await self.get_process(process.community, process.name, process.id)
        return process

    # Events, subscriptions, deliveries

    async def list_events(
        self, community: str | None = None, *, after: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events after the ``event_id`` ``after``, oldest first: the community's, or every
        community's of this Driver."""
        return await self._send(_calls.list_events(community, after=after, limit=limit))

    async def iter_events(
        self, community: str | None = None, *, after: int = 0, page_size: int = 100
    ) -> AsyncIterator[Event]:
        """Every event after ``after``, page by page, until none is left."""
        while True:
            page = await self.list_events(community, after=after, limit=page_size)
            for event in page:
                yield event
            if len(page) < page_size:
                return
            after = page[-1].event_id

    async def get_subscriptions(self, community: str) -> list[str] | None:
        """Glob patterns of the event types delivered to the event URL; ``None`` means all."""
        return await self._send(_calls.get_subscriptions(community))

    async def set_subscriptions(
        self, community: str, event_types: list[str] | None
    ) -> list[str] | None:
        """Choose which event types reach the event URL (``None``: all)."""
        return await self._send(_calls.set_subscriptions(community, event_types))

    async def list_deliveries(
        self, *, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[Delivery]:
        """This Driver's deliveries, newest first; ``status="dead"`` for those given up."""
        return await self._send(_calls.list_deliveries(status, limit))

    async def replay_delivery(self, delivery_id: int) -> Delivery:
        """Send a delivery again, with its original ``webhook-id``."""
        return await self._send(_calls.replay_delivery(delivery_id))

    async def replay_dead_deliveries(self, since: datetime | None = None) -> int:
        """Send every dead delivery again (created since ``since``, if given); how many."""
        return await self._send(_calls.replay_dead_deliveries(since))


class MetagovClient:
    """A sync client for one Driver (one API key); the same methods as
    :class:`AsyncMetagovClient`, blocking.

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url,
            headers=_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> MetagovClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        kwargs = call.request_kwargs()
        attempt = 0
        while True:
            response = self._http.request(call.method, call.path, **kwargs)
            delay = self.retry.delay(response, attempt)
            if delay is None:
                return _result(call, response)
            response.close()
            time.sleep(delay)
            attempt += 1

    def is_ready(self) -> bool:
        """Whether the gateway answers ``/readyz`` with 200; ``False`` if it is down."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    # Communities

    def get_community(self, slug: str) -> Community:
        """The community and its plugin instances."""
        return self._send(_calls.get_community(slug))

    def create_community(
        self,
        slug: str | None = None,
        *,
        readable_name: str = "",
        plugins: PluginsArg | None = None,
    ) -> Community:
        """Create a community; see :meth:`AsyncMetagovClient.create_community`."""
        return self._send(_calls.create_community(slug, readable_name, plugins))

    def update_community(
        self,
        slug: str,
        *,
        new_slug: str | None = None,
        readable_name: str | None = None,
        plugins: PluginsArg | None = None,
    ) -> Community:
        """``PUT`` the community; see :meth:`AsyncMetagovClient.update_community`."""
        call = _calls.update_community(
            slug, new_slug=new_slug, readable_name=readable_name, plugins=plugins
        )
        return self._send(call)

    def declare_community(
        self, slug: str, *, readable_name: str | None = None, plugins: PluginsArg | None = None
    ) -> Community:
        """Create or update; see :meth:`AsyncMetagovClient.declare_community`."""
        try:
            return self.update_community(slug, readable_name=readable_name, plugins=plugins)
        except NotFoundError as err:
            if err.code != "unknown_community":
                raise
        try:
            return self.create_community(slug, readable_name=readable_name or "", plugins=plugins)
        except ConflictError as err:
            if err.code != "slug_taken":
                raise
        return self.update_community(slug, readable_name=readable_name, plugins=plugins)

    def delete_community(self, slug: str) -> None:
        """Delete the community with its plugin instances, processes and events."""
        self._send(_calls.delete_community(slug))

    # Plugins

    def enable_plugin(
        self, community: str, name: str, config: Mapping[str, Any] | None = None
    ) -> Plugin:
        """Enable a plugin (or re-configure the instance with the same platform id)."""
        return self._send(_calls.enable_plugin(community, name, config or {}))

    def configure_plugin(
        self, community: str, name: str, instance_id: int, config: Mapping[str, Any]
    ) -> Plugin:
        """Re-configure an instance, keeping its state and processes."""
        return self._send(_calls.configure_plugin(community, name, instance_id, config))

    def disable_plugin(self, community: str, name: str, instance_id: int) -> None:
        """Disable an instance; its open processes become ``cancelled``."""
        self._send(_calls.disable_plugin(community, name, instance_id))

    def plugin_metadata(self, name: str) -> PluginMetadata:
        """What the plugin declares: config schema, actions, processes, event types."""
        return self._send(_calls.plugin_metadata(name))

    def plugin_schemas(self) -> dict[str, dict[str, Any]]:
        """Every plugin's config JSON Schema, by plugin name."""
        return self._send(_calls.plugin_schemas())

    # Actions

    def perform_action(
        self,
        community: str,
        action: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        community_platform_id: str | None = None,
        public: bool = False,
    ) -> Any:
        """Perform ``action``; see :meth:`AsyncMetagovClient.perform_action`."""
        call = _calls.perform_action(
            community,
            action,
            parameters,
            community_platform_id=community_platform_id,
            public=public,
        )
        return self._send(call)

    # Processes

    def start_process(
        self,
        community: str,
        process: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        callback_url: str | None = None,
        community_platform_id: str | None = None,
    ) -> Process:
        """Start ``process``; see :meth:`AsyncMetagovClient.start_process`."""
        call = _calls.start_process(
            community,
            process,
            parameters,
            callback_url=callback_url,
            community_platform_id=community_platform_id,
        )
        return self._send(call)

    def get_process(self, community: str, process: str, process_id: int) -> Process:
        """The process record."""
        return self._send(_calls.get_process(community, process, process_id))

    def close_process(self, community: str, process: str, process_id: int) -> Process:
        """Close the process now; see :meth:`AsyncMetagovClient.close_process`."""
        return self._send(_calls.close_process(community, process, process_id))

    def list_processes(
        self,
        community: str,
        *,
        status: ProcessStatus | None = None,
        plugin: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Process]:
        """The community's processes, newest first."""
        call = _calls.list_processes(
            community, status=status, plugin=plugin, limit=limit, offset=offset
        )
        return self._send(call)

    def wait_for_outcome(
        self,
        process: Process,
        *,
        timeout: float = 60.0,
        interval: float = 0.25,
        max_interval: float = 5.0,
    ) -> Process:
        """Poll until the process has ended; see :meth:`AsyncMetagovClient.wait_for_outcome`."""
        polling = _Polling(timeout, interval, max_interval)
        while process.is_open:
            wait = polling.next_wait()
            if wait is None:
                raise ProcessTimeoutError(process, timeout)
            time.sleep(wait)
            process = self.get_process(process.community, process.name, process.id)
        return process

    # Events, subscriptions, deliveries

    def list_events(
        self, community: str | None = None, *, after: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events after the ``event_id`` ``after``, oldest first."""
        return self._send(_calls.list_events(community, after=after, limit=limit))

    def iter_events(
        self, community: str | None = None, *, after: int = 0, page_size: int = 100
    ) -> Iterator[Event]:
        """Every event after ``after``, page by page, until none is left."""
        while True:
            page = self.list_events(community, after=after, limit=page_size)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].event_id

    def get_subscriptions(self, community: str) -> list[str] | None:
        """Glob patterns of the event types delivered to the event URL; ``None`` means all."""
        return self._send(_calls.get_subscriptions(community))

    def set_subscriptions(self, community: str, event_types: list[str] | None) -> list[str] | None:
        """Choose which event types reach the event URL (``None``: all)."""
        return self._send(_calls.set_subscriptions(community, event_types))

    def list_deliveries(
        self, *, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[Delivery]:
        """This Driver's deliveries, newest first."""
        return self._send(_calls.list_deliveries(status, limit))

    def replay_delivery(self, delivery_id: int) -> Delivery:
        """Send a delivery again, with its original ``webhook-id``."""
        return self._send(_calls.replay_delivery(delivery_id))

    def replay_dead_deliveries(self, since: datetime | None = None) -> int:
        """Send every dead delivery again (created since ``since``, if given); how many."""
        return self._send(_calls.replay_dead_deliveries(since))
