"""The NEAR transaction, built and signed by the plugin itself, checked against published test
vectors (Trust Wallet's NEAR serialization and signing tests, which match nearcore's layout):
a function-call transaction's Borsh bytes, a signed transaction, its hash, and the key's public
half."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from metagov.plugins.near.transaction import (
    KeyPair,
    b58decode,
    b58encode,
    function_call,
    sign,
    transaction,
)

SECRET = (
    "ed25519:"
    "3hoMW1HvnRLSFCLZnvPzWeoGwtdHzke34B2cTHM8rhcbG3TbuLKtShTv3DvyejnXKXKBiV7YPkLeqUHN1ghnqpFv"
)
PUBLIC = "Anu7LYDfpLtkP7E16LT9imXF694BdQaa9ufVkQiwTQxC"
BLOCK = "244ZQ9cgj3CQ6bWBdytfrJMuMQ1jdXLFGnr4HhvtCTnM"
# test.near → whatever.near, nonce 1, FunctionCall("qqq", args [1, 2, 3], gas 1000, deposit 1)
FUNCTION_CALL_TX = (
    "09000000746573742e6e65617200917b3d268d4b58f7fec1b150bd68d69be3ee5d4cc39855e341538465bb77"
    "860d01000000000000000d00000077686174657665722e6e6561720fa473fd26901df296be6adc4cc4df34d0"
    "40efa2435224b6986910e630c2fef601000000020300000071717103000000010203e8030000000000000100"
    "0000000000000000000000000000"
)
# the same, with a Transfer of 1 yoctoNEAR instead, and its signed form and hash
TRANSFER_TX = (
    "09000000746573742e6e65617200917b3d268d4b58f7fec1b150bd68d69be3ee5d4cc39855e341538465bb77"
    "860d01000000000000000d00000077686174657665722e6e6561720fa473fd26901df296be6adc4cc4df34d0"
    "40efa2435224b6986910e630c2fef6010000000301000000000000000000000000000000"
)
SIGNED_TRANSFER = (
    "CQAAAHRlc3QubmVhcgCRez0mjUtY9/7BsVC9aNab4+5dTMOYVeNBU4Rlu3eGDQEAAAAAAAAADQAAAHdoYXRldmVy"
    "Lm5lYXIPpHP9JpAd8pa+atxMxN800EDvokNSJLaYaRDmMML+9gEAAAADAQAAAAAAAAAAAAAAAAAAAACWmoMzIYbu"
    "l1Xkg5MlUlgG4Ymj0tK7S0dg6URD6X4cTyLe7vAFmo6XExAO2m4ZFE2n6KDvflObIHCLodjQIb0B"
)
TRANSFER_HASH = "eea6e680f3ea51a7f667e9a801d0bfadf66e03d41ed54975b3c6006351461b32"


def test_the_function_call_transaction_matches_the_published_bytes() -> None:
    key = KeyPair.from_string(SECRET)
    serialized = transaction(
        signer_id="test.near",
        public_key=key.public,
        nonce=1,
        receiver_id="whatever.near",
        block_hash=b58decode(BLOCK),
        actions=[function_call("qqq", bytes([1, 2, 3]), gas=1000, deposit=1)],
    )
    assert serialized.hex() == FUNCTION_CALL_TX


def test_signing_matches_the_published_signed_transaction_and_hash() -> None:
    signed, tx_hash = sign(bytes.fromhex(TRANSFER_TX), KeyPair.from_string(SECRET))
    assert base64.b64encode(signed).decode() == SIGNED_TRANSFER
    assert b58decode(tx_hash).hex() == TRANSFER_HASH
    assert tx_hash == b58encode(hashlib.sha256(bytes.fromhex(TRANSFER_TX)).digest())
    signature = signed[-64:]
    Ed25519PublicKey.from_public_bytes(b58decode(PUBLIC)).verify(
        signature, hashlib.sha256(bytes.fromhex(TRANSFER_TX)).digest()
    )


def test_keys_give_their_public_half_from_the_full_key_or_the_seed() -> None:
    full = KeyPair.from_string(SECRET)
    assert full.public_key == f"ed25519:{PUBLIC}"
    seed = b58encode(b58decode(SECRET.removeprefix("ed25519:"))[:32])
    assert KeyPair.from_string(f"ed25519:{seed}").public_key == full.public_key
    assert KeyPair.from_string(seed).public_key == full.public_key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("secp256k1:" + SECRET.removeprefix("ed25519:"), "only ed25519"),
        ("ed25519:0OIl", "not base58"),
        ("ed25519:" + b58encode(b"\x01" * 40), "64 bytes"),
        ("ed25519:" + b58encode(b"\x01" * 64), "does not match"),
    ],
)
def test_bad_keys_are_refused_without_repeating_them(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        KeyPair.from_string(text)
    assert text.partition(":")[2] not in str(refused.value)


def test_base58_round_trips_and_keeps_leading_zeros() -> None:
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0\x01") == "112"
    assert b58decode("112") == b"\0\0\x01"
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    for data in (b"\0", b"\xff" * 32, bytes(range(64))):
        assert b58decode(b58encode(data)) == data


def test_gas_and_deposit_must_fit_their_integers() -> None:
    with pytest.raises(ValueError):
        function_call("m", b"{}", gas=2**64, deposit=0)
    with pytest.raises(ValueError):
        function_call("m", b"{}", gas=1, deposit=2**128)
    assert function_call("m", b"", gas=2**64 - 1, deposit=2**128 - 1).endswith(b"\xff" * 24)
