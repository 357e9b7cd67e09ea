"""Vector stores: the `VectorStore` protocol, its payload/filter types, and two backends.

The backends import their Qdrant libraries, so they load lazily (`from memory.stores import EdgeVectorStore`
imports qdrant_edge only then); the protocol and types are plain dataclasses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memory.stores.base import (
    OPEN_END,
    AccessFilter,
    Beam,
    ChunkPayload,
    JurisdictionGrant,
    PayloadPatch,
    ScoredPoint,
    Selector,
    VectorPoint,
    VectorStore,
)

if TYPE_CHECKING:
    from memory.stores.edge import EdgeVectorStore
    from memory.stores.edge_config import EdgeTuning
    from memory.stores.server import ServerVectorStore

__all__ = [
    "OPEN_END",
    "AccessFilter",
    "Beam",
    "ChunkPayload",
    "EdgeTuning",
    "EdgeVectorStore",
    "JurisdictionGrant",
    "PayloadPatch",
    "ScoredPoint",
    "Selector",
    "ServerVectorStore",
    "VectorPoint",
    "VectorStore",
]

_LAZY = {
    "EdgeVectorStore": "memory.stores.edge",
    "EdgeTuning": "memory.stores.edge_config",
    "ServerVectorStore": "memory.stores.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
