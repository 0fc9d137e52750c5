"""The log's Merkle tree: RFC 9162 §2.1 hashing, inclusion and consistency proofs, tiles.

Pure functions over hashes (no I/O). Hashes are 32-byte SHA-256 digests:

    leaf hash  = SHA-256(0x00 || entry)                 (RFC 9162 §2.1.1)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")

A *node* `(level, index)` is the Merkle Tree Hash of the full, aligned subtree
of leaves `[index * 2**level, (index + 1) * 2**level)`. Proofs are computed
(RFC 9162 §2.1.3.1 PATH, §2.1.4.1 SUBPROOF) as lists of leaf *ranges*; each
range is the concatenation of aligned full subtrees (`range_nodes`), so a store
that keeps full-subtree hashes (the C2SP tlog-tiles layout: tiles of 256
hashes at levels 0, 8, 16, ...) answers any proof from a bounded number of
stored hashes (`tile_of_node`), without recomputing the tree.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency)
and raises `MerkleProofError` (a ValueError) on any mismatch or malformed input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
TILE_HEIGHT = 8  # C2SP tlog-tiles: 2**8 = 256 hashes per tile
TILE_WIDTH = 1 << TILE_HEIGHT
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]  # (level, index)
NodeLookup = Callable[[int, int], bytes]


class MerkleProofError(ValueError):
    """A proof does not verify, or its sizes / hashes are malformed."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------- ranges and nodes


def range_nodes(start: int, end: int) -> list[Node]:
    """The aligned full subtrees that make up leaves [start, end), largest first.

    Valid for the ranges proofs use: `start` is a multiple of a power of two
    >= end - start, so the range's Merkle Tree Hash folds these nodes right to
    left (`fold_range`)."""
    nodes: list[Node] = []
    position, remaining = start, end - start
    while remaining:
        level = remaining.bit_length() - 1
        if position % (1 << level):
            raise ValueError(f"range [{start}, {end}) is not aligned for a Merkle subtree")
        nodes.append((level, position >> level))
        position += 1 << level
        remaining -= 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a range from the hashes of its `range_nodes`."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]) as leaf ranges, bottom-up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start = start + k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]) as leaf ranges, bottom-up.

    Empty when old_size is 0 or equal to new_size."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    out: list[tuple[int, int]] = []
    start, end, complete = 0, new_size, True
    while old_size != end:
        k = _split(end - start)
        if old_size - start <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, complete = start + k, False
    if not complete:
        out.append((start, end))
    out.reverse()
    return out


def proof_nodes(ranges: Iterable[tuple[int, int]]) -> list[Node]:
    """Every stored node the given ranges need (deduplicated, in first-use order)."""
    return list(dict.fromkeys(n for a, b in ranges for n in range_nodes(a, b)))


def proof_hashes(ranges: Iterable[tuple[int, int]], lookup: NodeLookup) -> list[bytes]:
    """Materialise a proof: one hash per range, from `lookup(level, index)`."""
    return [fold_range([lookup(level, idx) for level, idx in range_nodes(a, b)]) for a, b in ranges]


def root_nodes(size: int) -> list[Node]:
    return range_nodes(0, size)


# --------------------------------------------------------------------------- verification


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise MerkleProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: `leaf` (a leaf hash) is leaf `index` of the tree of `size` with `root`.

    Raises MerkleProofError."""
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    if not 0 <= index < size:
        raise MerkleProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise MerkleProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("inclusion proof is too short")
    if r != root:
        raise MerkleProofError(f"inclusion proof of leaf {index} does not lead to the root of size {size}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: the tree (new_size, new_root) extends (old_size, old_root).

    old_size == new_size needs an empty proof and equal roots; old_size == 0
    needs an empty proof. Raises MerkleProofError."""
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    if not 0 <= old_size <= new_size:
        raise MerkleProofError(f"size {new_size} cannot extend size {old_size}")
    if old_size == new_size:
        if proof:
            raise MerkleProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise MerkleProofError(f"two different roots for size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise MerkleProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise MerkleProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise MerkleProofError(f"size {new_size} is not an append-only extension of size {old_size}")


# --------------------------------------------------------------------------- tiles (C2SP tlog-tiles)


def tile_of_node(level: int, index: int) -> tuple[int, int, int, int]:
    """Where node (level, index) is computed from in the tile layout.

    Returns (tile_level, tile_index, first, count): the node is the Merkle Tree
    Hash of the `count` (a power of two <= 256) consecutive hashes starting at
    position `first` of tile (tile_level, tile_index)."""
    tile_level, height = divmod(level, TILE_HEIGHT)
    first_hash = index << height  # index among the hashes stored at level tile_level * 8
    tile_index, first = divmod(first_hash, TILE_WIDTH)
    return tile_level, tile_index, first, 1 << height


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """MTH of a power-of-two count of consecutive hashes (a full subtree)."""
    layer = list(hashes)
    while len(layer) > 1:
        layer = [node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """C2SP tlog-tiles path `tile/<L>/<N>[.p/<W>]`; level "entries" for entry bundles.

    <N> is split in zero-padded 3-digit elements, all but the last prefixed 'x'."""
    digits = f"{index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    name = "/".join([*(f"x{p}" for p in parts[:-1]), parts[-1]])
    suffix = f".p/{width}" if width != TILE_WIDTH else ""
    return f"tile/{level}/{name}{suffix}"


def parse_tile_path(path: str) -> tuple[int | str, int, int]:
    """Inverse of `tile_path` (without the leading 'tile/'): (level, index, width).

    Raises ValueError on anything that is not the canonical form."""
    head, _, rest = path.partition("/")
    if head == "entries":
        level: int | str = "entries"
    elif head.isdigit() and head == str(int(head)) and int(head) <= 63:
        level = int(head)
    else:
        raise ValueError(f"bad tile level {head!r}")
    width = TILE_WIDTH
    if ".p/" in rest:
        rest, _, w = rest.partition(".p/")
        if not (w.isdigit() and w == str(int(w)) and 1 <= int(w) <= 255):
            raise ValueError(f"bad partial tile width {w!r}")
        width = int(w)
    parts = rest.split("/")
    if not parts or len(parts) > 8:
        raise ValueError("bad tile index")
    for p in parts[:-1]:
        if len(p) != 4 or p[0] != "x" or not p[1:].isdigit():
            raise ValueError(f"bad tile index element {p!r}")
    if len(parts[-1]) != 3 or not parts[-1].isdigit():
        raise ValueError(f"bad tile index element {parts[-1]!r}")
    index = int("".join(p.lstrip("x") for p in parts))
    if tile_path(level, index, width) != f"tile/{path}":
        raise ValueError("tile index is not in canonical form")
    return level, index, width


def tile_widths(size: int) -> dict[int, tuple[int, int]]:
    """For a tree of `size` leaves: {tile level: (number of full tiles, width of the partial tile or 0)}."""
    out: dict[int, tuple[int, int]] = {}
    level, hashes = 0, size
    while hashes:
        out[level] = divmod(hashes, TILE_WIDTH)
        hashes //= TILE_WIDTH
        level += 1
    return out


def entry_bundle(entries: Iterable[bytes]) -> bytes:
    """C2SP tlog-tiles entry bundle: big-endian uint16 length || entry, per entry."""
    out = bytearray()
    for e in entries:
        if len(e) > 0xFFFF:
            raise ValueError(f"log entry of {len(e)} bytes does not fit a uint16 length")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    """Inverse of `entry_bundle`. Raises ValueError on a truncated bundle."""
    out: list[bytes] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError("truncated entry bundle")
        n = int.from_bytes(data[i : i + 2], "big")
        if i + 2 + n > len(data):
            raise ValueError("truncated entry bundle")
        out.append(bytes(data[i + 2 : i + 2 + n]))
        i += 2 + n
    return out


# --------------------------------------------------------------------------- an in-memory tree


@dataclass
class MemoryTree:
    """A whole tree in memory (verifiers, monitors, witnesses' tests): node hashes cached per level."""

    levels: list[list[bytes]] = field(default_factory=lambda: [[]])

    @classmethod
    def from_entries(cls, entries: Iterable[bytes]) -> MemoryTree:
        return cls.from_leaf_hashes(leaf_hash(e) for e in entries)

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes]) -> MemoryTree:
        tree = cls()
        for h in hashes:
            tree.append_hash(h)
        return tree

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_hash(self, h: bytes) -> None:
        _check_hash(h, "leaf hash")
        level = 0
        self.levels[0].append(bytes(h))
        while len(self.levels[level]) % 2 == 0:
            row = self.levels[level]
            parent = node_hash(row[-2], row[-1])
            if len(self.levels) == level + 1:
                self.levels.append([])
            self.levels[level + 1].append(parent)
            level += 1

    def node(self, level: int, index: int) -> bytes:
        try:
            return self.levels[level][index]
        except IndexError:
            raise ValueError(f"node ({level}, {index}) is not a full subtree of this tree") from None

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size} (have {self.size})")
        return fold_range([self.node(lv, i) for lv, i in root_nodes(size)])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        return proof_hashes(inclusion_ranges(index, size), self.node)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        return proof_hashes(consistency_ranges(old_size, new_size), self.node)


# --------------------------------------------------------------------------- the right edge of a tiled tree


@dataclass
class TileEdge:
    """The right edge of a tree stored as C2SP tiles: the partial tile of every level.

    `append` adds leaf hashes and returns the tiles to (re)write, {(level, index):
    bytes}, full ones and the grown partial ones; `root` is the tree's root,
    computed from the edge alone (every node of the root's decomposition lies in
    a partial tile). A store keeps the tiles and rebuilds the edge with
    `from_tiles` after a restart."""

    size: int = 0
    rows: dict[int, list[bytes]] = field(default_factory=dict)

    @classmethod
    def from_tiles(cls, size: int, partial: dict[int, bytes]) -> TileEdge:
        """`partial` = {level: stored bytes of that level's partial tile} (may be longer than `size` implies)."""
        rows: dict[int, list[bytes]] = {}
        for level, (_full, width) in tile_widths(size).items():
            raw = partial.get(level, b"") if width else b""
            if len(raw) < HASH_SIZE * width:
                raise ValueError(f"partial tile of level {level} is shorter than size {size} implies")
            rows[level] = [raw[i : i + HASH_SIZE] for i in range(0, HASH_SIZE * width, HASH_SIZE)]
        return cls(size, rows)

    def append(self, hashes: Iterable[bytes]) -> dict[tuple[int, int], bytes]:
        writes: dict[tuple[int, int], bytes] = {}
        touched: set[int] = set()

        def push(level: int, h: bytes, position: int) -> None:
            row = self.rows.setdefault(level, [])
            row.append(h)
            touched.add(level)
            if len(row) == TILE_WIDTH:
                index = position // TILE_WIDTH
                writes[(level, index)] = b"".join(row)
                self.rows[level] = []
                push(level + 1, subtree_root(row), index)

        for h in hashes:
            _check_hash(h, "leaf hash")
            push(0, bytes(h), self.size)
            self.size += 1
        widths = tile_widths(self.size)
        for level in touched:
            if self.rows.get(level):
                writes[(level, widths[level][0])] = b"".join(self.rows[level])
        return writes

    def root(self) -> bytes:
        def node(level: int, index: int) -> bytes:
            tile_level, _tile_index, first, count = tile_of_node(level, index)
            return subtree_root(self.rows[tile_level][first : first + count])

        return fold_range([node(lv, i) for lv, i in root_nodes(self.size)])
