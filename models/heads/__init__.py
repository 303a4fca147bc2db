"""Pooling heads, registered by name on import. To add one: a new file here and one import line below."""

from models.heads import gap, gem, mac, netvlad, spp  # noqa: F401  (imported for their registrations)
from models.heads.base import Head, available_heads, build_head, register_head

__all__ = ["Head", "available_heads", "build_head", "register_head"]
