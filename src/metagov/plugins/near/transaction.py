"""The one NEAR transaction this plugin sends, built and signed without a NEAR library.

A contract call is a ``Transaction`` holding ``FunctionCall`` actions, serialized with Borsh
(little-endian integers; strings and byte vectors prefixed with their u32 length; enums as a u8
variant index), hashed with SHA-256 and signed with the account's Ed25519 key:

    Transaction {
        signer_id: String, public_key: PublicKey, nonce: u64, receiver_id: String,
        block_hash: [u8; 32], actions: Vec<Action>,
    }
    PublicKey = u8 key type (0 = ED25519) + [u8; 32]
    Action::FunctionCall (variant 2) { method_name: String, args: Vec<u8>, gas: u64, deposit: u128 }
    SignedTransaction { transaction: Transaction, signature: u8 key type + [u8; 64] }

The transaction's hash (base58 of the SHA-256) is its id on the chain. Keys and hashes travel
in NEAR's base58 (the Bitcoin alphabet); a key is written ``ed25519:<base58>``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {char: i for i, char in enumerate(ALPHABET)}

ED25519 = 0
FUNCTION_CALL = 2
MAX_U64 = 2**64 - 1
MAX_U128 = 2**128 - 1


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rest = divmod(number, 58)
        out = ALPHABET[rest] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _INDEX:
            raise ValueError("not base58")
        number = number * 58 + _INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


@dataclass(frozen=True)
class KeyPair:
    """An account's Ed25519 access key."""

    private: Ed25519PrivateKey
    public: bytes

    @classmethod
    def from_string(cls, text: str) -> KeyPair:
        """``ed25519:<base58>`` of the 64-byte secret key NEAR tools write (seed then public
        key), or of the 32-byte seed alone. Errors never repeat the key."""
        kind, _, encoded = text.strip().rpartition(":")
        if kind not in ("", "ed25519"):
            raise ValueError("only ed25519 keys are supported")
        try:
            raw = b58decode(encoded)
        except ValueError:
            raise ValueError("the key is not base58") from None
        if len(raw) not in (32, 64):
            raise ValueError("an ed25519 secret key is 64 bytes (or a 32-byte seed)")
        private = Ed25519PrivateKey.from_private_bytes(raw[:32])
        public = private.public_key().public_bytes_raw()
        if len(raw) == 64 and raw[32:] != public:
            raise ValueError("the key's public half does not match its seed")
        return cls(private, public)

    @property
    def public_key(self) -> str:
        return f"ed25519:{b58encode(self.public)}"


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<I", len(data)) + data


def _bytes(value: bytes) -> bytes:
    return struct.pack("<I", len(value)) + value


def function_call(method: str, args: bytes, gas: int, deposit: int) -> bytes:
    """One ``Action::FunctionCall``, serialized."""
    if not 0 <= gas <= MAX_U64 or not 0 <= deposit <= MAX_U128:
        raise ValueError("gas is a u64 and deposit a u128")
    return (
        bytes([FUNCTION_CALL])
        + _string(method)
        + _bytes(args)
        + struct.pack("<Q", gas)
        + deposit.to_bytes(16, "little")
    )


def transaction(
    *,
    signer_id: str,
    public_key: bytes,
    nonce: int,
    receiver_id: str,
    block_hash: bytes,
    actions: list[bytes],
) -> bytes:
    """A ``Transaction``, serialized, with already serialized ``actions``."""
    if len(public_key) != 32 or len(block_hash) != 32:
        raise ValueError("the public key and the block hash are 32 bytes")
    return (
        _string(signer_id)
        + bytes([ED25519])
        + public_key
        + struct.pack("<Q", nonce)
        + _string(receiver_id)
        + block_hash
        + struct.pack("<I", len(actions))
        + b"".join(actions)
    )


def sign(serialized: bytes, key: KeyPair) -> tuple[bytes, str]:
    """The ``SignedTransaction`` bytes and the transaction's hash (base58)."""
    digest = hashlib.sha256(serialized).digest()
    signature = key.private.sign(digest)
    return serialized + bytes([ED25519]) + signature, b58encode(digest)
