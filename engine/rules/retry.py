"""Retries: exponential backoff with jitter, and when a message is dead — the one retry policy
the outbox, the worker and every channel use."""

from __future__ import annotations

import datetime as dt
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class AttemptResult(Protocol):
    """What one delivery attempt gave (a channel's DeliveryResult is one)."""

    @property
    def ok(self) -> bool: ...
    @property
    def retryable(self) -> bool: ...
    @property
    def retry_after(self) -> dt.timedelta | None: ...
    @property
    def error(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: base * 2**(attempt-1), capped, spread by ±jitter; dead after max_attempts."""

    max_attempts: int = 8
    base_delay: dt.timedelta = dt.timedelta(seconds=30)
    max_delay: dt.timedelta = dt.timedelta(hours=1)
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not 0 <= self.jitter < 1 or self.base_delay <= dt.timedelta(0):
            raise ValueError("a retry policy needs max_attempts >= 1, a positive base delay and 0 <= jitter < 1")


class DeliveryState(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """What the outbox row becomes after an attempt."""

    state: DeliveryState
    next_attempt_at: dt.datetime | None
    error: str = ""


def backoff_bounds(attempts: int, policy: RetryPolicy = RetryPolicy()) -> tuple[dt.timedelta, dt.timedelta]:
    """The earliest and latest wait after `attempts` failed attempts (for tests and the admin screen)."""
    middle = min(policy.max_delay, policy.base_delay * 2 ** min(max(attempts, 1) - 1, 40))
    return middle * (1 - policy.jitter), middle * (1 + policy.jitter)


def next_attempt_at(attempts: int, now: dt.datetime, policy: RetryPolicy = RetryPolicy(), *,
                    rand: Callable[[], float] = random.random, retry_after: dt.timedelta | None = None) -> dt.datetime | None:
    """When to try again after `attempts` failed attempts, or None: give up, the message is dead."""
    if attempts >= policy.max_attempts:
        return None
    low, high = backoff_bounds(attempts, policy)
    wait = low + (high - low) * rand()
    if retry_after is not None:  # the vendor said how long; never sooner
        wait = max(wait, min(retry_after, policy.max_delay))
    return now + wait


def plan_after_attempt(result: AttemptResult, attempts: int, now: dt.datetime, policy: RetryPolicy = RetryPolicy(), *,
                       rand: Callable[[], float] = random.random) -> DeliveryPlan:
    """Delivered, retry at a time, or dead — `attempts` counts the attempt that produced `result`."""
    if result.ok:
        return DeliveryPlan(DeliveryState.DELIVERED, None, result.error)
    if not result.retryable:
        return DeliveryPlan(DeliveryState.DEAD, None, result.error)
    when = next_attempt_at(attempts, now, policy, rand=rand, retry_after=result.retry_after)
    if when is None:
        return DeliveryPlan(DeliveryState.DEAD, None, f"gave up after {attempts} attempts: {result.error}")
    return DeliveryPlan(DeliveryState.RETRY, when, result.error)
