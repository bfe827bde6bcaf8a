"""Parameters and results of the RevShare plugin.

A payment pointer is the ``$wallet.example/alice`` shorthand of Web Monetization, or the
``https://`` URL it stands for. Weights are positive integers: a pointer with weight 3 is picked
three times as often as one with weight 1.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DEFAULT_KEY = "_DEFAULT"
MAX_POINTERS = 100
MAX_WEIGHT = 1_000_000_000

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}\.)*{_LABEL}"
_PATH = r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*"
_POINTER = re.compile(rf"^\${_HOST}(?::\d{{1,5}})?{_PATH}$")
_URL = re.compile(rf"^https://{_HOST}(?::\d{{1,5}})?{_PATH}$")


def _payment_pointer(value: str) -> str:
    if not (_POINTER.match(value) or _URL.match(value)):
        raise ValueError(
            "not a payment pointer: give `$wallet.example/alice` or an `https://` URL "
            "(no query or fragment)"
        )
    return value


PaymentPointer = Annotated[
    str,
    Field(min_length=2, max_length=500, examples=["$wallet.example/alice"]),
    AfterValidator(_payment_pointer),
]
Weight = Annotated[int, Field(strict=True, gt=0, le=MAX_WEIGHT, examples=[3])]
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Which of the community's configs (several may be kept side by side)",
    ),
]


class KeyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Key = DEFAULT_KEY


class AddPointer(KeyParams):
    pointer: PaymentPointer
    weight: Weight


class RemovePointer(KeyParams):
    pointer: PaymentPointer


class ReplaceConfig(KeyParams):
    pointers: dict[PaymentPointer, Weight] = Field(
        max_length=MAX_POINTERS, description="Every pointer of the config with its weight"
    )


class RevShareConfig(BaseModel):
    """One config: its key and its pointers with their weights."""

    key: str
    pointers: dict[str, int]


class PickedPointer(BaseModel):
    pointer: str
