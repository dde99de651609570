"""The resuming asyncio client: every change exactly once, in order, across reconnects."""

from .connection import SubscriptionRefused, TimebankClient
from .routing import ClientSubscription, Handler

__all__ = ["ClientSubscription", "Handler", "SubscriptionRefused", "TimebankClient"]
