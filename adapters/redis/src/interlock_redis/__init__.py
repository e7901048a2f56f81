"""Redis adapter for Interlock: a durable DagStore (one Lua script per operation) and a task
queue on Redis Streams. See docs/adapters/redis.md."""

from interlock_redis.dispatcher import RedisStreamsDispatcher, queue_from_url
from interlock_redis.store import RedisStore, RedisUnavailable, from_url

__all__ = [
    "RedisStore",
    "RedisStreamsDispatcher",
    "RedisUnavailable",
    "from_url",
    "queue_from_url",
]
