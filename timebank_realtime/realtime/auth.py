"""Optional client authentication: HS256 JWTs minted by an application backend (pure).

Claims we read: ``exp`` (required), ``sub`` (logged), and ``scope``: an object mapping filter
fields (``contract``, ``address``, ``event_type``, ``tx_hash``) to the values the holder may
subscribe to. A subscription is allowed when, for every field in the scope, it names that field
and only allowed values. No scope: any subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from ..errors import CodedError
from ..events import FILTER_FIELDS as FIELDS
from .subscriptions import Filter, FilterError, parse_filter


class AuthError(CodedError):
    """A token refused at connect: token_required, token_invalid or token_expired."""


@dataclass(frozen=True, slots=True)
class Grant:
    subject: str | None
    expires_at: float
    scope: Filter | None
    scope_topic: str | None = None  # when the scope names one: the only topic the token may follow

    def permits(self, requested: Filter) -> bool:
        if self.scope is None:
            return True
        if self.scope_topic is not None and requested.topic != self.scope_topic:
            return False
        for name in FIELDS:
            allowed = self.scope.values(name)
            if allowed and not (requested.values(name) and requested.values(name) <= allowed):
                return False
        return True


def verify_token(token: Any, secret: str) -> Grant:
    if not isinstance(token, str) or not token:
        raise AuthError("token_required", "this server requires auth: {\"token\": <JWT>} to connect")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token_expired", "the token has expired; fetch a new one") from None
    except jwt.InvalidTokenError as error:
        raise AuthError("token_invalid", f"the token was refused: {error}") from None
    scope = _scope(claims.get("scope"))
    return Grant(subject=claims.get("sub"), expires_at=_expiry(claims["exp"]), scope=scope,
                 scope_topic=scope.topic if scope is not None and "topic" in claims["scope"] else None)


# 9999-12-31T23:59:59Z. PyJWT checks that exp is an integer in the future, no more: 10**400 passes
# it and then overflows a float (and the timer the socket side sets from it).
MAX_EXPIRY = 253_402_300_799


def _expiry(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw <= MAX_EXPIRY:
        raise AuthError("token_invalid", f"the token's exp claim must be a NumericDate no later than {MAX_EXPIRY}")
    return float(raw)


def _scope(raw: Any) -> Filter | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise AuthError("token_invalid", "the token's scope claim must be an object")
    try:
        return parse_filter(raw, max_values=10_000)
    except FilterError as error:
        raise AuthError("token_invalid", f"the token's scope is invalid: {error.message}") from None
