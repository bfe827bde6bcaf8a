"""The NEAR plugin: a community's NEAR account (its access key is a secret, stored encrypted)
views and calls the contract that holds the community's on-chain governance.

``view`` is a read-only ``query`` (``call_function``) on the node. ``call`` reads the access
key's nonce and a recent block hash (``view_access_key``), builds and signs a function-call
transaction itself (see :mod:`metagov.plugins.near.transaction`), and sends it with ``send_tx``,
waiting until it has executed. A transaction refused for its nonce (two calls at once) is signed
again once with the nonce NEAR expects.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from metagov.plugins.near.client import NearError, NearRpc
from metagov.plugins.near.schemas import CallParams, CallResult, NearConfig, ViewParams, ViewResult
from metagov.plugins.near.transaction import (
    KeyPair,
    b58decode,
    function_call,
    sign,
    transaction,
)
from metagov.plugins.sdk import AuthType, Plugin, PluginContext, UpstreamError, action

Ctx = PluginContext[NearConfig]


def decode_value(raw: bytes) -> Any:
    """A contract's return value: JSON if it is JSON, else text, else base64."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode()


def _args(args: dict[str, Any]) -> bytes:
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode()


def _expected_nonce(error: NearError) -> int | None:
    """The access key's nonce from an ``InvalidNonce`` refusal, if that is what it was."""
    found: list[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            invalid = node.get("InvalidNonce")
            if isinstance(invalid, dict) and isinstance(invalid.get("ak_nonce"), int):
                found.append(invalid["ak_nonce"])
            for value in node.values():
                walk(value)

    walk(error.data)
    return found[0] if found else None


def _logs(outcome: dict[str, Any]) -> list[str]:
    parts = [outcome.get("transaction_outcome") or {}, *(outcome.get("receipts_outcome") or [])]
    return [str(line) for part in parts for line in (part.get("outcome") or {}).get("logs") or []]


class NearPlugin(Plugin[NearConfig]):
    """A NEAR smart contract, viewed and called as the community's account."""

    name = "near"
    calls_configured_urls = True  # the community names its RPC node
    auth_type = AuthType.API_KEY
    config_model = NearConfig

    @action("view", description="Call a read-only method of the contract")
    async def view(self, ctx: Ctx, params: ViewParams) -> ViewResult:
        config = ctx.config
        result = await NearRpc(ctx.http, config.node_url).query(
            {
                "request_type": "call_function",
                "account_id": config.contract_id,
                "method_name": params.method,
                "args_base64": base64.b64encode(_args(params.args)).decode(),
            }
        )
        raw = result.get("result")
        if not isinstance(raw, list):
            raise UpstreamError("the NEAR node sent a view result without its value")
        return ViewResult(
            result=decode_value(bytes(raw)),
            logs=[str(line) for line in result.get("logs") or []],
            block_height=int(result.get("block_height", 0)),
            block_hash=str(result.get("block_hash", "")),
        )

    @action(
        "call",
        description="Sign and send a transaction calling a method of the contract (it may change "
        "state; the account pays the gas)",
    )
    async def call(self, ctx: Ctx, params: CallParams) -> CallResult:
        config = ctx.config
        key = KeyPair.from_string(config.private_key.get_secret_value())
        rpc = NearRpc(ctx.http, config.node_url)
        access = await rpc.query(
            {
                "request_type": "view_access_key",
                "account_id": config.account_id,
                "public_key": key.public_key,
            }
        )
        try:
            nonce = int(access["nonce"]) + 1
            block_hash = b58decode(str(access["block_hash"]))
        except (KeyError, TypeError, ValueError):
            raise UpstreamError("the NEAR node sent an unreadable access key") from None
        action_bytes = function_call(
            params.method, _args(params.args), params.gas, int(params.deposit)
        )
        for attempt in (1, 2):
            signed, tx_hash = sign(
                transaction(
                    signer_id=config.account_id,
                    public_key=key.public,
                    nonce=nonce,
                    receiver_id=config.contract_id,
                    block_hash=block_hash,
                    actions=[action_bytes],
                ),
                key,
            )
            try:
                outcome = await rpc.send_tx(base64.b64encode(signed).decode())
            except NearError as exc:
                expected = _expected_nonce(exc)
                if attempt == 1 and expected is not None:
                    nonce = expected + 1
                    continue
                raise
            except UpstreamError as exc:
                # It may still be executed: the Driver gets the hash to look it up.
                raise UpstreamError(f"{exc.detail} (transaction {tx_hash})") from None
            return _call_result(tx_hash, outcome)
        raise AssertionError("unreachable")


def _call_result(tx_hash: str, outcome: dict[str, Any]) -> CallResult:
    status = outcome.get("status")
    logs = _logs(outcome)
    if isinstance(status, dict) and "Failure" in status:
        failure = status["Failure"]
        return CallResult(
            transaction_hash=tx_hash,
            status="failure",
            failure=failure if isinstance(failure, dict) else {"error": failure},
            logs=logs,
        )
    value = None
    if isinstance(status, dict) and isinstance(status.get("SuccessValue"), str):
        try:
            value = decode_value(base64.b64decode(status["SuccessValue"], validate=True))
        except (binascii.Error, ValueError):
            value = status["SuccessValue"]
    return CallResult(transaction_hash=tx_hash, status="success", value=value, logs=logs)
