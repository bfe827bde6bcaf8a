"""The plugin registry: broken plugins are refused with a precise error, and never stop others."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from metagov.plugins.registry import PluginLoadError, PluginRegistry, inspect_plugin
from metagov.plugins.sdk import GovernanceProcess, Plugin, PluginContext, action


class Params(BaseModel):
    x: int = 0


class Result(BaseModel):
    y: int


def test_randomness_is_built_in() -> None:
    registry = PluginRegistry.discover()
    spec = registry.get("randomness")
    assert set(spec.actions) == {"random-int", "set-lucky-number", "get-lucky-number"}
    assert set(spec.processes) == {"delayed-stochastic-vote"}
    assert registry.failures == {}


def test_action_needs_async_and_typed_params() -> None:
    class SyncAction(Plugin[BaseModel]):
        name = "sync-action"

        @action("do")
        def do(self, ctx: PluginContext[BaseModel], params: Params) -> Result:  # type: ignore[type-var]
            return Result(y=1)

    with pytest.raises(
        PluginLoadError, match=r"plugin 'sync-action': action method 'do': must be `async def`"
    ):
        inspect_plugin(SyncAction)

    class Untyped(Plugin[BaseModel]):
        name = "untyped"

        @action("do")
        async def do(self, ctx, params):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(
        PluginLoadError, match=r"plugin 'untyped': action method 'do': parameter 'params'"
    ):
        inspect_plugin(Untyped)


def test_duplicate_action_slugs_are_refused() -> None:
    class Twice(Plugin[BaseModel]):
        name = "twice"

        @action("do")
        async def one(self, ctx: PluginContext[BaseModel], params: Params) -> None:
            return None

        @action("do")
        async def two(self, ctx: PluginContext[BaseModel], params: Params) -> None:
            return None

    with pytest.raises(PluginLoadError, match="action 'do' is declared twice"):
        inspect_plugin(Twice)


def test_process_declarations_are_checked() -> None:
    class NoStart(GovernanceProcess[BaseModel, Params, Result]):
        slug = "vote"
        params_model = Params
        outcome_model = Result

    class Host(Plugin[BaseModel]):
        name = "host"
        processes = (NoStart,)

    with pytest.raises(
        PluginLoadError,
        match=r"plugin 'host': process .*NoStart: method 'start' is not implemented",
    ):
        inspect_plugin(Host)

    class Reserved(BaseModel):
        callback_url: str

    class Clash(GovernanceProcess[BaseModel, Reserved, Result]):
        slug = "vote"
        params_model = Reserved
        outcome_model = Result

        async def start(self, ctx: object, params: Reserved) -> None:  # type: ignore[override]
            return None

    class Host2(Plugin[BaseModel]):
        name = "host-two"
        processes = (Clash,)

    with pytest.raises(PluginLoadError, match="reserved"):
        inspect_plugin(Host2)


def test_bad_names_are_refused() -> None:
    class Dotted(Plugin[BaseModel]):
        name = "has.dot"

    with pytest.raises(PluginLoadError, match=r"name 'has\.dot'"):
        inspect_plugin(Dotted)

    class WrongPid(Plugin[Params]):
        name = "wrong-pid"
        config_model = Params
        community_platform_id_field = "team"

    with pytest.raises(PluginLoadError, match="community_platform_id_field 'team'"):
        inspect_plugin(WrongPid)


@pytest.fixture
def installed_plugins(tmp_path: Path) -> Iterator[Path]:
    """Two third-party distributions on sys.path, discovered through real entry points: one
    good plugin and one whose module is broken."""
    (tmp_path / "good_plugin.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel
            from metagov.plugins.sdk import Plugin, PluginContext, action

            class Ping(BaseModel):
                pass

            class Pong(BaseModel):
                pong: bool

            class GoodPlugin(Plugin[BaseModel]):
                name = "good"

                @action("ping")
                async def ping(self, ctx: PluginContext[BaseModel], params: Ping) -> Pong:
                    return Pong(pong=True)
            """
        )
    )
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    for dist, entry in [
        ("good", "good = good_plugin:GoodPlugin"),
        ("broken", "broken = broken_plugin:Plugin"),
    ]:
        info = tmp_path / f"metagov_{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: metagov-{dist}\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(f"[metagov.plugins]\n{entry}\n")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("good_plugin", None)


def test_entry_points_load_and_a_broken_one_stops_nothing(installed_plugins: Path) -> None:
    registry = PluginRegistry.discover()
    assert {"randomness", "good"} <= set(registry.plugins)
    assert registry.get("good").source.startswith("entry point good")
    [(source, error)] = registry.failures.items()
    assert "broken" in source
    assert "missing dependency xyz" in error


def test_allow_and_block_lists(installed_plugins: Path) -> None:
    assert set(PluginRegistry.discover(allow=["good"]).plugins) == {"good"}
    assert "good" not in PluginRegistry.discover(block=["good"]).plugins
