"""Open event streams per API key, counted across every API process in Redis.

Each key has one sorted set, ``missions:streams:{key_id}``: a member per open stream, scored with
the time its process last vouched for it. A stream takes a slot (``acquire``: one script that first
drops the members nobody vouched for within ``ttl`` seconds, then adds its own if fewer than the
limit remain), refreshes it while it sends (``Slot.refresh``, at most every ``ttl / 4`` seconds)
and gives it back when it closes (``Slot.release``). A process that dies without releasing leaks
nothing for long: its members stop being refreshed and are dropped ``ttl`` seconds later.

Redis being down must not cut clients off from their runs (the streams poll Postgres then), so
the count fails open: a stream that could not be counted is let through, unsupervised, and a
refresh or release that fails is logged and forgotten."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

PREFIX = "missions:streams:"

# KEYS[1] the key's set; ARGV: now, ttl, limit, member. 1 when the member got a slot, else 0.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return 1
"""


class Slot:
    """One open stream's place in its key's count (``counted`` False: Redis could not be asked)."""

    def __init__(self, slots: StreamSlots, owner: str, member: str, *, counted: bool) -> None:
        self._slots = slots
        self.owner = owner
        self.member = member
        self.counted = counted
        self._refreshed = time.monotonic()
        self._released = False

    def refresh(self) -> None:
        """Vouch for the stream again, if it is due (cheap to call on every chunk sent)."""
        if not self.counted or self._released:
            return
        now = time.monotonic()
        if now - self._refreshed < self._slots.ttl / 4:
            return
        self._refreshed = now
        try:
            key = PREFIX + self.owner
            pipe = self._slots.client.pipeline(transaction=False)
            pipe.zadd(key, {self.member: time.time()}, xx=True)
            pipe.expire(key, int(self._slots.ttl) + 1)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not refresh the stream slot of key %s: %s", self.owner, exc)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if not self.counted:
            return
        try:
            self._slots.client.zrem(PREFIX + self.owner, self.member)
        except redis.RedisError as exc:  # (it expires after ttl seconds)
            log.warning("could not release the stream slot of key %s: %s", self.owner, exc)


class StreamSlots:
    """The stream counts of every key (see the module docstring)."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.client = client
        self.ttl = ttl
        self._acquire: Any = client.register_script(_ACQUIRE)

    def acquire(self, owner: str, limit: int) -> Slot | None:
        """A slot among ``owner``'s ``limit``, or None when all are taken."""
        member = secrets.token_hex(8)
        try:
            taken = self._acquire(keys=[PREFIX + owner], args=[time.time(), self.ttl, limit, member])
        except redis.RedisError as exc:
            log.warning("stream slots unavailable (%s): the stream of key %s is not counted", exc, owner)
            return Slot(self, owner, member, counted=False)
        return Slot(self, owner, member, counted=True) if taken else None

    def open_count(self, owner: str) -> int:
        """How many streams ``owner`` holds now (ignoring those nobody vouched for within ``ttl``)."""
        count: int = self.client.zcount(PREFIX + owner, time.time() - self.ttl, "+inf")
        return count
