"""Config, parameters and results of the NEAR plugin.

Parameter names follow the original plugin's too (``method_name``, ``amount``), so a Driver
written for it keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from metagov.plugins.near.transaction import MAX_U128, KeyPair

TESTNET_RPC = "https://rpc.testnet.near.org"
TERA = 10**12
DEFAULT_GAS = 100 * TERA  # what the original plugin attached
MAX_GAS = 300 * TERA  # the most one function call may use

AccountId = Annotated[
    str,
    Field(
        min_length=2,
        max_length=64,
        pattern=r"^(([a-z\d]+[-_])*[a-z\d]+\.)*([a-z\d]+[-_])*[a-z\d]+$",
        examples=["governance.testnet"],
    ),
]
MethodName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        validation_alias=AliasChoices("method", "method_name"),
        examples=["get_status"],
    ),
]


def _rpc_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("give an http:// or https:// URL")
    return value


def _key(value: SecretStr) -> SecretStr:
    KeyPair.from_string(value.get_secret_value())  # its ValueError never repeats the key
    return value


def _yocto(value: int | str) -> int:
    if isinstance(value, str):
        if not value.isdigit():
            raise ValueError("a deposit is a whole number of yoctoNEAR")
        value = int(value)
    if not 0 <= value <= MAX_U128:
        raise ValueError("a deposit is between 0 and 2**128 - 1 yoctoNEAR")
    return value


class NearConfig(BaseModel):
    """The community's NEAR account, the contract it governs, and the node it talks to."""

    model_config = ConfigDict(extra="forbid")

    node_url: Annotated[str, AfterValidator(_rpc_url)] = Field(
        TESTNET_RPC, max_length=500, description="JSON-RPC endpoint of a NEAR node"
    )
    account_id: AccountId = Field(description="The account that signs calls and pays their gas")
    contract_id: AccountId = Field(description="The account the contract is deployed to")
    private_key: Annotated[SecretStr, AfterValidator(_key)] = Field(
        description="An access key of account_id: `ed25519:<base58>` (as in ~/.near-credentials)",
        min_length=40,
        max_length=200,
    )


class ViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: MethodName
    args: dict[str, Any] = Field(default_factory=dict, description="JSON arguments")


class CallParams(ViewParams):
    gas: int = Field(DEFAULT_GAS, gt=0, le=MAX_GAS, description="Gas to attach, at most 300 Tgas")
    deposit: Annotated[int | str, AfterValidator(_yocto)] = Field(
        "0",
        validation_alias=AliasChoices("deposit", "amount"),
        description="yoctoNEAR to attach (a string, or a number below 2**53)",
        examples=["1000000000000000000000000"],
    )


class ViewResult(BaseModel):
    result: Any = Field(description="The method's return value: JSON, or text if it is not JSON")
    logs: list[str]
    block_height: int
    block_hash: str


class CallResult(BaseModel):
    transaction_hash: str
    status: Literal["success", "failure"]
    value: Any = Field(None, description="What the method returned (decoded), on success")
    failure: dict[str, Any] | None = Field(None, description="NEAR's failure, when it failed")
    logs: list[str] = Field(description="Logs of every receipt of the transaction")
