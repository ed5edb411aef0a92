"""Unguessable resource ids and API keys."""

from __future__ import annotations

import base64
import hashlib
import secrets

KEY_PREFIX = "sk_live_"


def new_id(prefix: str) -> str:
    """``prefix_`` followed by 120 random bits in lowercase base32, e.g. ``msn_k3x...``."""
    return f"{prefix}_{base64.b32encode(secrets.token_bytes(15)).decode().lower()}"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(secret: str) -> bytes:
    """Keys have 256 random bits, so a plain SHA-256 digest is enough to store them safely."""
    return hashlib.sha256(secret.encode("utf-8")).digest()
