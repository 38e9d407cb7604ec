"""Version transitions as pure functions: (aspired versions, current states) -> next action.

This is TF Serving's AvailabilityPreservingPolicy, made safer for small boxes where
a new version may be half-copied: a version that is no longer aspired is unloaded
only once an aspired version is AVAILABLE (or nothing is aspired any more), so a
new version that fails to load never takes the served one down. No threads, no I/O:
the manager asks, then acts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .servable import ManagerState


@dataclass(frozen=True)
class VersionView:
    """What the policy needs to know of one version."""

    state: ManagerState
    aspired: bool
    failed: bool = False  # END because loading failed for good (not an unload)


@dataclass(frozen=True)
class Action:
    kind: str  # "load" | "unload"
    version: int


def next_action(versions: Mapping[int, VersionView], *, loading_allowed: bool = True) -> Action | None:
    """The next transition for one model, or None when it is where it should be.

    Unloads come first (they free memory for loads); among loads the newest version
    goes first, so the latest version serves as early as possible.
    """
    aspired = [v for v, view in versions.items() if view.aspired]
    any_aspired_available = any(
        versions[v].state == ManagerState.AVAILABLE for v in aspired
    )
    for version in sorted(versions):
        view = versions[version]
        if view.aspired or view.state != ManagerState.AVAILABLE:
            continue
        if not aspired or any_aspired_available:
            return Action("unload", version)
    if loading_allowed:
        for version in sorted(aspired, reverse=True):
            if versions[version].state == ManagerState.START:
                return Action("load", version)
    return None
