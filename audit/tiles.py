"""C2SP tlog-tiles: the log as static tiles a mirror or witness fetches and checks itself.

A *hash tile* at level ``L``, index ``N`` holds up to 256 consecutive hashes of level
``8·L`` of the Merkle tree: those of the complete subtrees ``N·256 … N·256+W-1`` of
``2**(8·L)`` leaves each, concatenated (32 bytes each). An *entry bundle* ``N`` holds
entries ``N·256 …`` as big-endian uint16 length + exact bytes. A tile is *full* with
256 hashes or entries; the right-most tile of a level may be *partial*, of width
``W < 256``, and is then named with a ``.p/W`` suffix. Paths (https://c2sp.org/tlog-tiles)::

    tile/<L>/<N>[.p/<W>]          hash tile, L in 0…5
    tile/entries/<N>[.p/<W>]      entry bundle

``N`` is written in groups of three digits, all but the last prefixed with ``x``
(1234067 is ``x001/x234/067``). Everything here is a pure function of the tree's stored
hashes and the entries: a full tile, once served, never changes; a partial tile of
width ``W`` never changes either (the tree only grows to its right).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from audit.errors import MalformedError
from audit.merkle import HashReader

__all__ = [
    "HEIGHT",
    "MAX_LEVEL",
    "WIDTH",
    "Tile",
    "entry_bundle",
    "hash_tile",
    "parse_tile_path",
    "tile_width",
]

HEIGHT = 8
"""Levels of the tree per tile (C2SP fixes 8)."""
WIDTH = 1 << HEIGHT
"""Hashes or entries in a full tile: 256."""
MAX_LEVEL = 5
"""Highest hash-tile level a path may name."""

_ENTRIES = "entries"
_PATH = re.compile(
    r"^tile/(?P<level>[0-9]|entries)/(?P<n>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<w>[0-9]{1,3}))?$"
)


@dataclass(frozen=True)
class Tile:
    """One tile named by a path: ``level`` None for an entry bundle."""

    level: int | None
    """Hash-tile level, or None for an entry bundle."""
    index: int
    """Index ``N`` of the tile in its level."""
    width: int
    """Hashes or entries it holds: 256 when full, fewer when partial."""

    @property
    def path(self) -> str:
        """The tile's C2SP path, ``tile/…``."""
        digits = f"{self.index:03d}"
        digits = "0" * (-len(digits) % 3) + digits
        groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
        n = "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])
        level = _ENTRIES if self.level is None else str(self.level)
        suffix = "" if self.width == WIDTH else f".p/{self.width}"
        return f"tile/{level}/{n}{suffix}"


def parse_tile_path(path: str) -> Tile:
    """The tile named by ``path`` (``tile/…``); MalformedError if it is not a valid name.

    Refuses what the specification does not allow to be written two ways: leading zeros
    beyond the three digits of a group, a level above :data:`MAX_LEVEL`, a partial width
    of 0 or of 256 and more.
    """
    match = _PATH.match(path)
    if match is None:
        raise MalformedError(f"{path!r} is not a tlog-tiles path")
    groups = match["n"].replace("x", "").split("/")
    if len(groups) > 1 and groups[0] == "000":
        raise MalformedError(f"{path!r}: the tile index has a leading zero group")
    index = int("".join(groups))
    level = None if match["level"] == _ENTRIES else int(match["level"])
    if level is not None and level > MAX_LEVEL:
        raise MalformedError(f"{path!r}: level {level} is above {MAX_LEVEL}")
    width = WIDTH
    if match["w"] is not None:
        width = int(match["w"])
        if not 0 < width < WIDTH or str(width) != match["w"]:
            raise MalformedError(f"{path!r}: a partial tile's width is 1 to 255")
    tile = Tile(level, index, width)
    if tile.path != path:
        raise MalformedError(f"{path!r} is not the canonical name of tile {tile.path!r}")
    return tile


def tile_width(level: int | None, index: int, size: int) -> int:
    """How many hashes (or entries) tile ``index`` of ``level`` holds in a tree of ``size``.

    0 when the tile does not exist yet; :data:`WIDTH` when it is full.
    """
    nodes = size >> (HEIGHT * (level or 0))
    return max(0, min(WIDTH, nodes - index * WIDTH))


def hash_tile(hashes: HashReader, tile: Tile) -> bytes:
    """The bytes of hash tile ``tile``, read from the stored hashes."""
    if tile.level is None:
        raise ValueError("an entry bundle is not a hash tile")
    level = HEIGHT * tile.level
    first = tile.index * WIDTH
    return b"".join(hashes.subtree_hash(level, first + i) for i in range(tile.width))


def entry_bundle(entry_bytes: Callable[[int], bytes], tile: Tile) -> bytes:
    """The bytes of entry bundle ``tile``: each entry as uint16 big-endian length + bytes."""
    if tile.level is not None:
        raise ValueError("a hash tile is not an entry bundle")
    parts = []
    first = tile.index * WIDTH
    for index in range(first, first + tile.width):
        data = entry_bytes(index)
        if len(data) > 0xFFFF:
            raise MalformedError(f"entry {index} is {len(data)} bytes, more than a bundle holds")
        parts.append(struct.pack(">H", len(data)) + data)
    return b"".join(parts)
