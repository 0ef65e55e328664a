"""OVF/OVA manifests (``.mf``): ``SHA256(name)= hex`` lines, and checking files against them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from vmferry.sources.refusal import Refused, printable

_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\(([^()]+)\)\s*=\s*([0-9A-Fa-f]+)$")
_DIGEST_HEX = {"sha1": 40, "sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    algorithm: str  # hashlib name: sha1 | sha256 | sha512
    digest: str  # lowercase hex


def parse_manifest(text: str) -> dict[str, ManifestEntry]:
    """Entries by file name; a malformed line or a file listed twice is refused."""
    entries: dict[str, ManifestEntry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise Refused(f"manifest line {number} is not ALGO(name)= digest: {printable(line)}")
        algorithm, name, digest = match.group(1).lower(), match.group(2), match.group(3).lower()
        if len(digest) != _DIGEST_HEX[algorithm]:
            raise Refused(f"manifest line {number} has a {algorithm} digest of the wrong length")
        if name in entries:
            raise Refused(f"manifest lists {printable(name)} twice")
        entries[name] = ManifestEntry(name, algorithm, digest)
    if not entries:
        raise Refused("manifest lists no file")
    return entries


def new_hash(entry: ManifestEntry) -> Hasher:
    return hashlib.new(entry.algorithm)


def check_digest(entry: ManifestEntry, actual_hex: str) -> None:
    if actual_hex.lower() != entry.digest:
        raise Refused(
            f"manifest mismatch for {printable(entry.name)}: {entry.algorithm.upper()} is "
            f"{actual_hex[:16]}..., the manifest says {entry.digest[:16]}..."
        )


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...
