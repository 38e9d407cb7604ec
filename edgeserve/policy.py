"""Version transitions as pure functions: (aspired versions, current states) -> next action.

Two of TF Serving's policies. Availability-preserving (its default): load the new
version, then unload the old; made safer for small boxes where a new version may be
half-copied: a version that is no longer aspired is unloaded only once an aspired
version is AVAILABLE (or nothing is aspired any more), so a new version that fails to
load never takes the served one down. Resource-preserving: unload the old version
first, then load the new, so two copies are never in RAM at once; the manager makes
that safe (it checks the new version fits before the unload, holds requests in the
gap and reloads the old version if the new one fails). `choose_mode` picks between
them per swap from the memory budget (--version_transition_policy). No threads, no
I/O: the manager asks, then acts.
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


def pending_load(versions: Mapping[int, VersionView]) -> int | None:
    """The version the next load would be: the newest aspired one not yet tried, so
    the latest version serves as early as possible."""
    waiting = [v for v, view in versions.items() if view.aspired and view.state == ManagerState.START]
    return max(waiting, default=None)


def next_action(versions: Mapping[int, VersionView], *, preserve_resources: bool = False) -> Action | None:
    """The next transition for one model, or None when it is where it should be.

    Unloads come first (they free memory for loads). Availability-preserving: an
    un-aspired version goes once an aspired one serves (or none is aspired).
    `preserve_resources`: it goes as soon as an aspired version waits to load.
    """
    aspired = [v for v, view in versions.items() if view.aspired]
    any_aspired_available = any(
        versions[v].state == ManagerState.AVAILABLE for v in aspired
    )
    to_load = pending_load(versions)
    for version in sorted(versions):
        view = versions[version]
        if view.aspired or view.state != ManagerState.AVAILABLE:
            continue
        if not aspired or any_aspired_available or (preserve_resources and to_load is not None):
            return Action("unload", version)
    if to_load is not None:
        return Action("load", to_load)
    return None


# What choose_mode answers.
AVAILABILITY, RESOURCE, WAIT, REFUSE = "availability", "resource", "wait", "refuse"


def choose_mode(policy: str, need: int, free: int, reclaimable: int, others_busy: bool) -> str:
    """How the next load happens under --version_transition_policy and the budget.

    `need`: the pending version's estimated cost; `free`: the budget left now;
    `reclaimable`: what unloading the versions it replaces would free;
    `others_busy`: another load or unload is under way (it may free memory).
    AVAILABILITY/RESOURCE: go, beside or after the old version; WAIT: ask again
    when that other transition ends (TF Serving's BasicManager waits likewise);
    REFUSE: it cannot fit (TF Serving's "Insufficient resources").
    """
    if need <= free:
        return RESOURCE if policy == RESOURCE else AVAILABILITY
    if policy != AVAILABILITY and need <= free + reclaimable:
        return RESOURCE
    return WAIT if others_busy else REFUSE
