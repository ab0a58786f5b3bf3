"""Collision geometry as settings: strings that fit ROS parameter types, parsed and formatted.

    collision_spheres:     ["panda_link0: -0.074 -0.002 0.015 0.099", ...]  (link: x y z r, m)
    self_collision_pairs:  ["panda_hand:panda_link0", ...]                   (link:link)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SphereTable = dict[str, list[tuple[float, float, float, float]]]


def parse_spheres(entries: Sequence[str]) -> SphereTable:
    """'link: x y z r' strings -> {link: [(x, y, z, r), ...]}; ValueError names the bad entry."""
    out: SphereTable = {}
    for entry in entries:
        link, sep, rest = str(entry).partition(":")
        try:
            nums = [float(x) for x in rest.replace(",", " ").split()]
        except ValueError:
            nums = []
        finite = all(math.isfinite(x) for x in nums)
        if not sep or not link.strip() or len(nums) != 4 or not finite or nums[3] <= 0:
            raise ValueError(f"collision_spheres entry {entry!r}: expected 'link: x y z r' with "
                             "finite numbers and r > 0")
        out.setdefault(link.strip(), []).append((nums[0], nums[1], nums[2], nums[3]))
    return out


def format_spheres(spheres: Mapping[str, Sequence[Sequence[float]]]) -> list[str]:
    """The inverse of parse_spheres (how the defaults are written into the parameter table)."""
    return [f"{link}: " + " ".join(f"{float(x):g}" for x in s)
            for link, items in spheres.items() for s in items]


def parse_pairs(entries: Sequence[str]) -> list[tuple[str, str]]:
    """'link_a:link_b' strings -> [(link_a, link_b)]; ValueError names the bad entry."""
    pairs = []
    for entry in entries:
        a, sep, b = str(entry).partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise ValueError(f"self_collision_pairs entry {entry!r}: expected 'link_a:link_b'")
        pairs.append((a.strip(), b.strip()))
    return pairs
