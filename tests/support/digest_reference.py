"""The disk digest as vmferry.model.disk_digest's docstring defines it, computed the slow
obvious way from a disk's whole content: the reference the tests hold the real one to."""

from __future__ import annotations

from blake3 import blake3

from vmferry.model.disk_digest import LEAF, SPAN, Digest


def reference_digest(content: bytes) -> Digest:
    """The digest as the module's docstring defines it, computed the slow obvious way."""
    leaves = [content[i : i + LEAF] for i in range(0, len(content), LEAF)]
    per_span = SPAN // LEAF
    spans = []
    for s in range(0, max(len(leaves), 1), per_span):
        h = blake3()
        for leaf in leaves[s : s + per_span]:
            h.update(blake3(leaf).digest())
        spans.append(h.digest())
    return Digest(len(content), tuple(spans))
