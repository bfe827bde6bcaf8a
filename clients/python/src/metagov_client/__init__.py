"""A typed client for the Metagov governance gateway, for Drivers.

>>> from metagov_client import MetagovClient
>>> with MetagovClient("http://127.0.0.1:8000", "mgk_...") as mg:
...     mg.declare_community("my-community", plugins={"randomness": {}})
...     mg.perform_action("my-community", "randomness.random-int", {"low": 1, "high": 6})

and, where the gateway delivers events, ``verify_event(secret, request.headers, raw_body)``.
"""

from metagov_client._retry import RetryPolicy
from metagov_client.client import AsyncMetagovClient, MetagovClient, __version__
from metagov_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    InvalidInputError,
    MetagovError,
    NotFoundError,
    PayloadTooLargeError,
    ProcessTimeoutError,
    RateLimitedError,
    ServerError,
    UnavailableError,
    UpstreamError,
    WebhookVerificationError,
)
from metagov_client.models import (
    Community,
    Delivery,
    Event,
    EventTypeInfo,
    OperationInfo,
    Plugin,
    PluginConfig,
    PluginMetadata,
    Process,
)
from metagov_client.webhooks import sign_headers, verify_event, verify_signature

__all__ = [
    "AsyncMetagovClient",
    "AuthenticationError",
    "BadRequestError",
    "Community",
    "ConflictError",
    "Delivery",
    "Event",
    "EventTypeInfo",
    "FieldError",
    "InvalidInputError",
    "MetagovClient",
    "MetagovError",
    "NotFoundError",
    "OperationInfo",
    "PayloadTooLargeError",
    "Plugin",
    "PluginConfig",
    "PluginMetadata",
    "Process",
    "ProcessTimeoutError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "UnavailableError",
    "UpstreamError",
    "WebhookVerificationError",
    "__version__",
    "sign_headers",
    "verify_event",
    "verify_signature",
]
