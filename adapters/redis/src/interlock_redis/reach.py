"""What the Redis store and queue share about reaching the server: the unreachable error, the
decorator that raises it, and the split of a ``redis://`` URL into client URL and namespace."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from interlock.errors import StoreUnavailable, UsageError

__all__ = ["RedisUnavailable", "reachable", "split_url"]

P = ParamSpec("P")
R = TypeVar("R")
_BUSY = re.compile(r"(?:^|error: )BUSY ")
"""The server's ``BUSY`` error, alone or as redis-py quotes it from a pipeline ("Command # 1
(...) of pipeline caused error: BUSY ..."); not ``BUSYGROUP``, which is an answer."""


class RedisUnavailable(StoreUnavailable, redis.ConnectionError):
    """The server could not be reached, or the connection broke before the reply arrived.

    A mutating call that raises this may or may not have applied (it is one script: never
    half). Every operation is fenced, so repeating the same call is safe: it applies, or
    reports ``duplicate`` (``stale`` for a repeated ``resume_task``). Also a
    ``redis.ConnectionError``, so code catching redis-py's errors keeps working.
    """


def reachable(method: Callable[P, R]) -> Callable[P, R]:
    """Raise :class:`RedisUnavailable` (chained) for connection errors and timeouts, and for a
    ``BUSY`` reply: the server is running a long script (another client's, or a cancel of a
    huge run) and refused the command without running it — as unavailable as a lost
    connection, and a repeat once it is done is safe (redis-py raises it as a plain
    ``ResponseError``)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except RedisUnavailable:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"redis store unreachable during {method.__name__}: "
                                   f"{exc}") from exc
        except redis.ResponseError as exc:
            if not _BUSY.search(str(exc)):
                raise
            raise RedisUnavailable(f"redis store busy during {method.__name__}: "
                                   f"{exc}") from exc

    return wrapper


def split_url(url: str, default_namespace: str = "interlock") -> tuple[str, str]:
    """Split ``redis://host:6379/0?namespace=ns`` into the client URL and the namespace."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"not a redis URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = default_namespace
    rest = []
    for key, value in query:
        if key == "namespace":
            namespace = value
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), namespace
