"""Fresh random ids for runs and attempts."""

from __future__ import annotations

import os

__all__ = ["new_id"]


def new_id() -> str:
    """A fresh random id (run and attempt ids): 32 lowercase hex digits of 128 random bits,
    the shape of ``uuid.uuid4().hex`` without building a UUID (about 0.4 us instead of 1.8 us
    here; every claim makes one)."""
    return os.urandom(16).hex()
