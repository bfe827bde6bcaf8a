"""The console's locks: password hashing, signed cookie values, CSRF tokens and the limit on
sign-in attempts. Nothing here touches the database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id with the library's defaults (RFC 9106's second recommended profile: 64 MiB, 3 passes).
_HASHER = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name costs as long as a wrong
# password and timing does not tell which names exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
_SIGNING_CONTEXT = b"metagov console cookie v1"


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (None: an unknown operator, always False
    after the same work)."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)


def new_token() -> str:
    """256 random bits, URL-safe: a session token or a CSRF token."""
    return secrets.token_urlsafe(32)


def token_id(token: str) -> str:
    """What is stored of a session token: its SHA-256 (the token has 256 random bits, so a fast
    hash cannot be searched backwards)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; a missing one matches nothing."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class CookieSigner:
    """Signs cookie values with a key derived from the gateway's first secret key, and accepts
    values signed with any of them, so rotating ``METAGOV_SECRET_KEYS`` keeps operators signed
    in. The signature stops a forged or altered cookie before any database lookup."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        self._keys = [
            hmac.new(key.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest() for key in secret_keys
        ]

    def _mac(self, key: bytes, value: str) -> str:
        digest = hmac.new(key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(self._keys[0], value)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value if the signature is good, else None."""
        if not signed or "." not in signed:
            return None
        value, _, mac = signed.rpartition(".")
        if any(hmac.compare_digest(mac, self._mac(key, value)) for key in self._keys):
            return value
        return None


class SignInLimiter:
    """At most ``attempts`` sign-in attempts per client address within ``window`` seconds.

    It lives in the memory of one gateway process: behind N replicas an address gets N times
    the allowance, and a restart forgets it. That is enough to make guessing a password over the
    network slow; the argon2 hash makes guessing from a stolen table slow. Behind a proxy every
    client shares the proxy's address unless the server is told to trust forwarded addresses
    (uvicorn's ``--proxy-headers``).
    """

    def __init__(self, attempts: int = 10, window: float = 300.0, max_clients: int = 10_000):
        self.attempts = attempts
        self.window = window
        self.max_clients = max_clients
        self._seen: dict[str, deque[float]] = {}

    def allow(self, client: str, now: float | None = None) -> float | None:
        """Count an attempt from ``client``; None if it may go ahead, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        recent = self._seen.get(client)
        if recent is None:
            if len(self._seen) >= self.max_clients:
                self._forget_idle(now)
            recent = self._seen[client] = deque()
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.attempts:
            return recent[0] + self.window - now
        recent.append(now)
        return None

    def _forget_idle(self, now: float) -> None:
        for client in [
            c for c, seen in self._seen.items() if not seen or seen[-1] <= now - self.window
        ]:
            del self._seen[client]
        if len(self._seen) >= self.max_clients:  # all busy: a flood; start afresh
            self._seen.clear()
