"""Policy values shared by the config, the planner and the CLI."""

from __future__ import annotations

from enum import Enum


class DeletePolicy(Enum):
    """What happens on a target when a mirrored file disappears from the source."""

    MIRROR = "mirror"
    KEEP = "keep"
    TRASH = "trash"
