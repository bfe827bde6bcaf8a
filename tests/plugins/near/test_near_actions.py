"""NEAR's view and call against a mocked NEAR node (respx at its JSON-RPC URL): the JSON-RPC
requests the node receives, the signed transaction it is sent (rebuilt here byte by byte and its
signature verified), NEAR's refusals named, rate limits and outages; the key is never shown."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from metagov.config import Settings
from metagov.plugins.near.transaction import b58decode, b58encode
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry

NODE = "https://near.test/rpc"
SEED = "3hoMW1HvnRLSFCLZnvPzWeoGwtdHzke34B2cTHM8rhcbG3TbuLKtShTv3DvyejnXKXKBiV7YPkLeqUHN1ghnqpFv"
PRIVATE_KEY = f"ed25519:{SEED}"
PUBLIC_KEY = "ed25519:Anu7LYDfpLtkP7E16LT9imXF694BdQaa9ufVkQiwTQxC"
ACCOUNT = "community.testnet"
CONTRACT = "governance.testnet"
CONFIG = {
    "node_url": NODE,
    "account_id": ACCOUNT,
    "contract_id": CONTRACT,
    "private_key": PRIVATE_KEY,
}
BLOCK_HASH = "J1zkrK8sQXe4sLRPc2AiNBLgdQZjtrVQmBo9ChNtTmhb"
AK_NONCE = 187309654000001

Handler = Callable[[dict[str, Any]], httpx.Response]


def rpc_result(result: Any) -> httpx.Response:
    return httpx.Response(200, json={"jsonrpc": "2.0", "result": result, "id": "metagov"})


def rpc_error(cause: str, data: Any, info: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "jsonrpc": "2.0",
            "error": {
                "name": "HANDLER_ERROR",
                "cause": {"name": cause, "info": info or {}},
                "code": -32000,
                "message": "Server error",
                "data": data,
            },
            "id": "metagov",
        },
    )


ACCESS_KEY = rpc_result(
    {
        "block_hash": BLOCK_HASH,
        "block_height": 187316844,
        "nonce": AK_NONCE,
        "permission": "FullAccess",
    }
)


def executed(tx_hash: str, status: dict[str, Any], logs: list[str]) -> httpx.Response:
    return rpc_result(
        {
            "final_execution_status": "EXECUTED_OPTIMISTIC",
            "status": status,
            "transaction": {"signer_id": ACCOUNT, "receiver_id": CONTRACT, "hash": tx_hash},
            "transaction_outcome": {
                "id": tx_hash,
                "block_hash": BLOCK_HASH,
                "outcome": {
                    "logs": [],
                    "receipt_ids": ["7fW4oYyy1Tn4bJ2b6S3N6W3r1UWbXc2x1E5M1FJ5nJJd"],
                    "gas_burnt": 2428084306548,
                    "tokens_burnt": "242808430654800000000",
                    "executor_id": ACCOUNT,
                    "status": {"SuccessReceiptId": "7fW4oYyy1Tn4bJ2b6S3N6W3r1UWbXc2x1E5M1FJ5nJJd"},
                },
            },
            "receipts_outcome": [
                {
                    "id": "7fW4oYyy1Tn4bJ2b6S3N6W3r1UWbXc2x1E5M1FJ5nJJd",
                    "block_hash": BLOCK_HASH,
                    "outcome": {
                        "logs": logs,
                        "receipt_ids": [],
                        "gas_burnt": 3211462298283,
                        "tokens_burnt": "321146229828300000000",
                        "executor_id": CONTRACT,
                        "status": status,
                    },
                }
            ],
        }
    )


class FakeNode:
    """Answers each JSON-RPC method with a handler, and keeps what it was sent."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.handlers: dict[str, Handler] = {}
        self.requests: list[dict[str, Any]] = []
        self.route = router.post(NODE).mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        key = body["method"]
        if key == "query":
            key = f"query:{body['params']['request_type']}"
        return self.handlers[key](body)

    def sent_transactions(self) -> list[bytes]:
        return [
            base64.b64decode(r["params"]["signed_tx_base64"])
            for r in self.requests
            if r["method"] == "send_tx"
        ]


def expected_transaction(nonce: int, method: str, args: bytes, gas: int, deposit: int) -> bytes:
    """The Borsh bytes of the call, laid out field by field as nearcore defines them."""

    def string(text: str) -> bytes:
        return struct.pack("<I", len(text.encode())) + text.encode()

    return b"".join(
        [
            string(ACCOUNT),
            b"\x00" + b58decode(PUBLIC_KEY.removeprefix("ed25519:")),
            struct.pack("<Q", nonce),
            string(CONTRACT),
            b58decode(BLOCK_HASH),
            struct.pack("<I", 1),
            b"\x02" + string(method) + struct.pack("<I", len(args)) + args,
            struct.pack("<Q", gas),
            deposit.to_bytes(16, "little"),
        ]
    )


def check_signed(signed: bytes, unsigned: bytes) -> str:
    assert signed[: len(unsigned)] == unsigned
    assert signed[len(unsigned)] == 0  # ED25519
    digest = hashlib.sha256(unsigned).digest()
    Ed25519PublicKey.from_public_bytes(b58decode(PUBLIC_KEY.removeprefix("ed25519:"))).verify(
        signed[len(unsigned) + 1 :], digest
    )
    return b58encode(digest)


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    async with open_gateway(settings, make_registry()) as gateway:
        yield gateway


@pytest.fixture
async def driver(gw: TestGateway) -> DriverCredentials:
    driver = await gw.create_driver("alice")
    await gw.create_community(driver, "commons", [{"name": "near", "config": CONFIG}])
    return driver


@pytest.fixture
def node(respx_mock: respx.MockRouter) -> FakeNode:
    return FakeNode(respx_mock)


async def act(
    gw: TestGateway, driver: DriverCredentials, slug: str, **parameters: Any
) -> httpx.Response:
    return await gw.client.post(
        f"/api/internal/action/near.{slug}",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )


async def test_view_queries_call_function_and_decodes_the_value(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    value = json.dumps({"open": True, "votes": 3}).encode()
    node.handlers["query:call_function"] = lambda body: rpc_result(
        {
            "block_hash": BLOCK_HASH,
            "block_height": 193483226,
            "logs": ["reading proposal 7"],
            "result": list(value),
        }
    )

    response = await act(gw, driver, "view", method="get_proposal", args={"id": 7})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "result": {"open": True, "votes": 3},
        "logs": ["reading proposal 7"],
        "block_height": 193483226,
        "block_hash": BLOCK_HASH,
    }
    [sent] = node.requests
    assert sent["jsonrpc"] == "2.0"
    assert sent["method"] == "query"
    assert sent["params"] == {
        "request_type": "call_function",
        "finality": "final",
        "account_id": CONTRACT,
        "method_name": "get_proposal",
        "args_base64": base64.b64encode(b'{"id":7}').decode(),
    }
    assert PRIVATE_KEY not in json.dumps(node.requests)


async def test_view_errors_name_nears_cause(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    answers = [
        (
            rpc_error(
                "UNKNOWN_ACCOUNT",
                f"account {CONTRACT} does not exist while viewing",
                {"requested_account_id": CONTRACT},
            ),
            400,
            "near_error",
            f"UNKNOWN_ACCOUNT): account {CONTRACT} does not exist while viewing",
        ),
        (
            rpc_error(
                "CONTRACT_EXECUTION_ERROR",
                "wasm execution failed",
                {"vm_error": "MethodResolveError(MethodNotFound)"},
            ),
            400,
            "near_error",
            "MethodResolveError(MethodNotFound)",
        ),
        (
            rpc_result(
                {
                    "error": "wasm execution failed with error: FunctionCallError(CompilationError"
                    '(CodeDoesNotExist { account_id: "governance.testnet" }))',
                    "logs": [],
                    "block_height": 1,
                    "block_hash": BLOCK_HASH,
                }
            ),
            400,
            "near_error",
            "CodeDoesNotExist",
        ),
        (rpc_error("INTERNAL_ERROR", "node is syncing"), 502, "upstream_error", "INTERNAL_ERROR"),
        (httpx.Response(503, text="unavailable"), 502, "upstream_error", "503"),
    ]
    for answer, status, code, named in answers:
        node.handlers["query:call_function"] = lambda body, answer=answer: answer
        response = await act(gw, driver, "view", method="get_status")
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert named in response.json()["detail"]

    node.handlers["query:call_function"] = lambda body: httpx.Response(
        429, headers={"Retry-After": "7"}, text="Too Many Requests"
    )
    limited = await act(gw, driver, "view", method="get_status")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"

    node.route.mock(side_effect=httpx.ConnectError("unreachable"))
    down = await act(gw, driver, "view", method="get_status")
    assert down.status_code == 502
    assert down.json()["detail"] == "the NEAR node could not be reached: ConnectError"


async def test_call_signs_and_sends_a_function_call_transaction(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    node.handlers["query:view_access_key"] = lambda body: ACCESS_KEY
    hashes: list[str] = []

    def send(body: dict[str, Any]) -> httpx.Response:
        signed = base64.b64decode(body["params"]["signed_tx_base64"])
        unsigned = signed[:-65]
        hashes.append(b58encode(hashlib.sha256(unsigned).digest()))
        result = base64.b64encode(b'{"accepted":true}').decode()
        return executed(hashes[-1], {"SuccessValue": result}, ["vote recorded for 7"])

    node.handlers["send_tx"] = send

    response = await act(
        gw,
        driver,
        "call",
        method="vote",
        args={"proposal": 7, "choice": "yes"},
        gas=30_000_000_000_000,
        deposit="1000000000000000000000000",
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "transaction_hash": hashes[0],
        "status": "success",
        "value": {"accepted": True},
        "failure": None,
        "logs": ["vote recorded for 7"],
    }
    access, sent = node.requests
    assert access["method"] == "query"
    assert access["params"] == {
        "request_type": "view_access_key",
        "finality": "final",
        "account_id": ACCOUNT,
        "public_key": PUBLIC_KEY,
    }
    assert sent["method"] == "send_tx"
    assert sent["params"]["wait_until"] == "EXECUTED_OPTIMISTIC"
    unsigned = expected_transaction(
        AK_NONCE + 1,
        "vote",
        b'{"proposal":7,"choice":"yes"}',
        30_000_000_000_000,
        10**24,
    )
    [signed] = node.sent_transactions()
    assert check_signed(signed, unsigned) == hashes[0]
    assert PRIVATE_KEY not in json.dumps(node.requests) + response.text


async def test_call_takes_the_original_parameter_names_and_defaults(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    node.handlers["query:view_access_key"] = lambda body: ACCESS_KEY
    node.handlers["send_tx"] = lambda body: executed("h", {"SuccessValue": ""}, [])
    response = await act(gw, driver, "call", method_name="close", amount=5)
    assert response.status_code == 200, response.text
    assert response.json()["value"] is None
    [signed] = node.sent_transactions()
    unsigned = expected_transaction(AK_NONCE + 1, "close", b"{}", 100 * 10**12, 5)
    check_signed(signed, unsigned)


async def test_a_failed_execution_is_reported_not_raised(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    node.handlers["query:view_access_key"] = lambda body: ACCESS_KEY
    failure = {
        "ActionError": {
            "index": 0,
            "kind": {"FunctionCallError": {"ExecutionError": "Smart contract panicked: closed"}},
        }
    }
    node.handlers["send_tx"] = lambda body: executed("h", {"Failure": failure}, [])
    response = await act(gw, driver, "call", method="vote", args={"proposal": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "failure"
    assert body["failure"] == failure
    assert body["value"] is None


async def test_a_stale_nonce_is_signed_again_once(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    node.handlers["query:view_access_key"] = lambda body: ACCESS_KEY
    invalid_nonce = {
        "TxExecutionError": {
            "InvalidTxError": {"InvalidNonce": {"ak_nonce": AK_NONCE + 4, "tx_nonce": AK_NONCE + 1}}
        }
    }
    answers = iter(
        [
            rpc_error("INVALID_TRANSACTION", invalid_nonce, invalid_nonce),
            executed("h", {"SuccessValue": ""}, []),
        ]
    )
    node.handlers["send_tx"] = lambda body: next(answers)
    response = await act(gw, driver, "call", method="vote")
    assert response.status_code == 200, response.text
    first, second = node.sent_transactions()
    check_signed(first, expected_transaction(AK_NONCE + 1, "vote", b"{}", 10**14, 0))
    check_signed(second, expected_transaction(AK_NONCE + 5, "vote", b"{}", 10**14, 0))
    assert response.json()["transaction_hash"] == b58encode(
        hashlib.sha256(expected_transaction(AK_NONCE + 5, "vote", b"{}", 10**14, 0)).digest()
    )


async def test_call_errors_name_nears_cause_and_keep_the_key_secret(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    node.handlers["query:view_access_key"] = lambda body: rpc_error(
        "UNKNOWN_ACCESS_KEY",
        f"Access key for public key {PUBLIC_KEY} has never been observed on the node",
        {"public_key": PUBLIC_KEY, "block_height": 1, "block_hash": BLOCK_HASH},
    )
    rejected = await act(gw, driver, "call", method="vote")
    assert rejected.status_code == 400
    assert rejected.json()["code"] == "near_unknown_access_key"
    assert "not an access key of the account" in rejected.json()["detail"]
    assert SEED not in rejected.text

    node.handlers["query:view_access_key"] = lambda body: ACCESS_KEY
    node.handlers["send_tx"] = lambda body: rpc_error(
        "INVALID_TRANSACTION",
        {"TxExecutionError": {"InvalidTxError": {"NotEnoughBalance": {"signer_id": ACCOUNT}}}},
    )
    poor = await act(gw, driver, "call", method="vote", deposit="5")
    assert poor.status_code == 400
    assert "INVALID_TRANSACTION" in poor.json()["detail"]
    assert "NotEnoughBalance" in poor.json()["detail"]

    node.handlers["send_tx"] = lambda body: httpx.Response(
        408,
        json={
            "jsonrpc": "2.0",
            "error": {
                "name": "HANDLER_ERROR",
                "cause": {"name": "TIMEOUT_ERROR", "info": {}},
                "code": -32000,
                "message": "Server error",
                "data": "Timeout",
            },
            "id": "metagov",
        },
    )
    slow = await act(gw, driver, "call", method="vote")
    assert slow.status_code == 502
    [*_, last] = node.sent_transactions()
    assert b58encode(hashlib.sha256(last[:-65]).digest()) in slow.json()["detail"]

    node.handlers["query:view_access_key"] = lambda body: httpx.Response(
        429, headers={"Retry-After": "3"}, text="Too Many Requests"
    )
    limited = await act(gw, driver, "call", method="vote")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"

    node.route.mock(side_effect=httpx.ConnectError("unreachable"))
    down = await act(gw, driver, "call", method="vote")
    assert down.status_code == 502
    assert down.json()["detail"] == "the NEAR node could not be reached: ConnectError"


async def test_configs_and_parameters_are_checked(
    gw: TestGateway, driver: DriverCredentials, node: FakeNode
) -> None:
    community = await gw.client.get("/api/internal/community/commons", headers=driver.headers)
    [near] = [p for p in community.json()["plugins"] if p["name"] == "near"]
    assert near["secrets_set"] == ["private_key"]
    assert SEED not in community.text

    await gw.create_community(driver, "garden")
    default = await gw.client.post(
        "/api/internal/plugin/near",
        json={k: v for k, v in CONFIG.items() if k != "node_url"},
        headers=driver.to("garden"),
    )
    assert default.status_code == 201, default.text
    assert default.json()["config"]["node_url"] == "https://rpc.testnet.near.org"
    for bad, field in [
        ({**CONFIG, "private_key": "ed25519:" + SEED[:-3]}, "private_key"),
        ({**CONFIG, "account_id": "Not An Account"}, "account_id"),
        ({**CONFIG, "node_url": "wss://near.test"}, "node_url"),
    ]:
        refused = await gw.client.post(
            "/api/internal/plugin/near", json=bad, headers=driver.to("garden")
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"][-1] == field
        assert SEED[:20] not in refused.text

    for parameters, field in [
        ({"method": "vote", "gas": 301 * 10**12}, "gas"),
        ({"method": "vote", "deposit": "-1"}, "deposit"),
        ({"method": "vote", "deposit": 2**128}, "deposit"),
        ({"method": "not a method"}, "method"),
        ({"args": {}}, "method"),
    ]:
        response = await act(gw, driver, "call", **parameters)
        assert response.status_code == 422, (parameters, response.text)
        assert field in {str(p) for e in response.json()["errors"] for p in e["loc"]}
    assert not node.requests
