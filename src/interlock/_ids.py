"""Fresh random ids for runs and attempts."""

from __future__ import annotations

import hashlib
import os

__all__ = ["handover_id", "new_id"]


def new_id() -> str:
    """A fresh random id (run and attempt ids): 32 lowercase hex digits of 128 random bits,
    the shape of ``uuid.uuid4().hex`` without building a UUID (about 0.4 us instead of 1.8 us
    here; every claim makes one)."""
    return os.urandom(16).hex()


def handover_id(attempt_id: str, task_id: str) -> str:
    """The attempt id under which a completion of ``attempt_id`` claims ``task_id`` for its
    caller (a hand-over): derived, not random, so that a repeat of that completion — its reply
    lost — finds the claim again. Same shape as :func:`new_id` (a chain of hand-overs does not
    grow it)."""
    digest = hashlib.blake2b(f"{attempt_id}\0{task_id}".encode(), digest_size=16)
    return digest.hexdigest()
