"""Production guards for calls to an OpenAI-compatible upstream: timeouts, retry with backoff, circuit breaker.

`Guard.call(fn)` runs one upstream call under these rules:
- **retry** on 429, 500/502/503/504, connection errors and timeouts, up to `max_retries` more attempts,
  waiting the upstream's `Retry-After` (seconds or an HTTP date; also OpenAI's `retry-after-ms`) when it sends
  one, else exponential backoff with full jitter (`backoff_base * 2**attempt`, capped at `backoff_max`);
  a `Retry-After` longer than `max_retry_after` is not waited for: the error goes to the caller at once;
- **deadline**: no retry starts once `total_timeout` seconds have passed since the first attempt
  (each attempt's own connect/read timeouts are the SDK client's `timeout`);
- **circuit breaker**, one per upstream model (`base_url` + model id, shared by every client in the process):
  after `failure_threshold` consecutive failures (5xx, timeouts, connection errors; never 4xx such as 400,
  401 or 429, which say the upstream is alive) it opens, and calls fail fast with `UpstreamUnavailable` for
  `reset_seconds`; then one trial call goes through (half-open): success closes it, failure opens it again.
A stream is retried only until its first chunk arrives: after that, the caller has seen output.
Not for: rate limiting our own server's clients (serve/ does that) or choosing among several upstreams.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timezone
from typing import TypeVar

from athanor.errors import AthanorError

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BREAKER_STATUSES = frozenset({500, 502, 503, 504})


class UpstreamUnavailable(AthanorError):
    """The upstream's circuit breaker is open: it failed repeatedly and is left alone for a while."""


@dataclass(frozen=True)
class GuardConfig:
    """How hard to try an upstream. Every field is in seconds except the counts."""

    max_retries: int = 3  # attempts after the first one
    backoff_base: float = 0.5  # first backoff ceiling; doubles each attempt (full jitter below it)
    backoff_max: float = 20.0  # no backoff wait is longer than this
    max_retry_after: float = 60.0  # a Retry-After above this is returned to the caller instead of waited for
    total_timeout: float = 900.0  # no retry starts after this much time since the first attempt
    failure_threshold: int = 5  # consecutive failures that open the breaker
    reset_seconds: float = 30.0  # how long an open breaker fails fast before one trial call

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.failure_threshold < 1:
            raise ValueError("guards: max_retries must be >= 0 and failure_threshold >= 1")
        if min(self.backoff_base, self.backoff_max, self.max_retry_after, self.total_timeout, self.reset_seconds) < 0:
            raise ValueError("guards: durations must be >= 0 seconds")


@dataclass
class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (reset_seconds) -> half-open -> one trial."""

    failure_threshold: int
    reset_seconds: float
    clock: Callable[[], float] = time.monotonic
    num_failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_seconds else "open"

    def before_call(self, name: str) -> None:
        """Raise UpstreamUnavailable while open (or while a half-open trial is already running)."""
        with self._lock:
            state = self.state
            if state == "closed":
                return
            if state == "half_open" and not self.trial_in_flight:
                self.trial_in_flight = True
                return
            wait = max(0.0, self.reset_seconds - (self.clock() - self.opened_at))
            raise UpstreamUnavailable(f"{name}: circuit open after {self.num_failures} consecutive failures; "
                                      f"next try in {wait:.0f}s")

    def on_success(self) -> None:
        with self._lock:
            self.num_failures, self.opened_at, self.trial_in_flight = 0, None, False

    def on_failure(self) -> None:
        with self._lock:
            self.num_failures += 1
            if self.trial_in_flight or self.num_failures >= self.failure_threshold:
                self.opened_at = self.clock()
            self.trial_in_flight = False

    def on_neutral(self) -> None:
        """A call that ended without saying anything about the upstream's health (a 4xx): free the trial slot."""
        with self._lock:
            self.trial_in_flight = False


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(key: str, config: GuardConfig) -> CircuitBreaker:
    """The process-wide breaker of one upstream model (created on first use)."""
    with _breakers_lock:
        if key not in _breakers:
            _breakers[key] = CircuitBreaker(config.failure_threshold, config.reset_seconds)
        return _breakers[key]


def reset_breakers() -> None:
    """Forget every breaker (tests; an operator after fixing an upstream)."""
    with _breakers_lock:
        _breakers.clear()


def classify(error: BaseException) -> tuple[bool, bool, float | None]:
    """(retryable, counts against the breaker, Retry-After seconds or None) for an exception from the SDK/httpx."""
    status = getattr(error, "status_code", None)
    if status is None:
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
    if status is not None:
        return status in RETRY_STATUSES, status in BREAKER_STATUSES, retry_after_seconds(error)
    if _is_transport_error(error):
        return True, True, None
    return False, False, None


def _is_transport_error(error: BaseException) -> bool:
    """Connection refused/reset and timeouts, from the openai SDK or plain httpx."""
    try:
        import openai

        if isinstance(error, openai.APIConnectionError):  # APITimeoutError is a subclass
            return True
    except ImportError:  # pragma: no cover - the SDK is optional for httpx callers
        pass
    import httpx

    return isinstance(error, (httpx.TransportError, TimeoutError, ConnectionError))


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait an error response asks for: `retry-after-ms`, else `Retry-After` (seconds or HTTP date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


class Guard:
    """Retries + breaker for one upstream model; `sleep` and `rand` are injectable for tests."""

    def __init__(self, key: str, config: GuardConfig | None = None, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self.key, self.config = key, config or GuardConfig()
        self.breaker = breaker_for(key, self.config)
        self.sleep, self.rand = sleep, rand
        self.waits: list[float] = []  # every wait taken, for logs and tests

    def call(self, fn: Callable[[], T]) -> T:
        """fn() under the rules in the module docstring."""
        start = time.monotonic()
        for attempt in range(self.config.max_retries + 1):
            self.breaker.before_call(self.key)
            try:
                result = fn()
            except Exception as e:
                wait = self._after_failure(e, attempt, start)
                if wait is None:
                    raise
                self.waits.append(wait)
                self.sleep(wait)
                continue
            self.breaker.on_success()
            return result
        raise AssertionError("unreachable: the last attempt raises or returns")

    def stream(self, open_stream: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Items of open_stream(), retried (whole) only while nothing has been yielded yet."""
        def first() -> tuple[Iterator[T], list[T]]:
            it = iter(open_stream())
            head = [x for x in _take_one(it)]  # the first item proves the stream started
            return it, head

        it, head = self.call(first)
        yield from head
        try:
            yield from it
        except Exception as e:
            _, counts, _ = classify(e)
            if counts:
                self.breaker.on_failure()
            raise

    def _after_failure(self, error: Exception, attempt: int, start: float) -> float | None:
        """Record the failure; the seconds to wait before the next attempt, or None to give up."""
        retryable, counts, retry_after = classify(error)
        if counts:
            self.breaker.on_failure()
        else:
            self.breaker.on_neutral()
        if not retryable or attempt >= self.config.max_retries or self.breaker.state != "closed":
            return None
        if retry_after is not None:
            wait = retry_after
            if wait > self.config.max_retry_after:
                return None
        else:
            wait = self.rand() * min(self.config.backoff_max, self.config.backoff_base * 2 ** attempt)
        if time.monotonic() - start + wait > self.config.total_timeout:
            return None
        return wait


def _take_one(it: Iterator[T]) -> list[T]:
    for x in it:
        return [x]
    return []
