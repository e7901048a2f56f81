"""A server busy running a long script (another client's, or the cancel of a huge run)
answers every other command ``BUSY`` without running it: the store raises ``RedisUnavailable``
(a ``StoreUnavailable``) for it, as for a lost connection, so a worker repeats the call once the
server is free instead of dropping its completion."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import redis

from interlock import StoreUnavailable
from interlock_redis import RedisStore, RedisUnavailable

SPIN = ("local start = tonumber(redis.call('TIME')[1]) "
        "while tonumber(redis.call('TIME')[1]) < start + 20 do end return 1")
"""A script that writes nothing and runs until killed (20 s at most)."""


def test_a_busy_reply_is_unavailable_and_the_store_works_after(redis_url: str,
                                                                namespace: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    store = RedisStore(redis.Redis.from_url(redis_url), namespace=namespace)
    previous = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
    admin.config_set("busy-reply-threshold", 50)
    spinner_error: list[BaseException] = []

    def spin() -> None:
        try:
            redis.Redis.from_url(redis_url).eval(SPIN, 0)
        except redis.ResponseError as exc:  # "Script killed by user"
            spinner_error.append(exc)

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until the server says BUSY (the script has passed the threshold)
            try:
                admin.ping()
            except redis.ResponseError as exc:
                assert str(exc).startswith("BUSY ")
                break
            assert time.monotonic() < deadline, "the server never became busy"
        with pytest.raises(RedisUnavailable, match="busy during get_run") as caught:
            store.get_run("r")
        assert isinstance(caught.value, StoreUnavailable)
        with pytest.raises(RedisUnavailable, match="busy during cancel_run"):
            store.cancel_run("r", "stop", 1.0)
    finally:
        deadline = time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(redis.ResponseError):  # not running yet, or gone
                admin.script_kill()
            thread.join(0.05)
        admin.config_set("busy-reply-threshold", previous)
    assert spinner_error and not thread.is_alive()
    assert store.get_run("r") is None  # served again
