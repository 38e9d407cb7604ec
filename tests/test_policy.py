"""The version policy as a pure function: what a user sees as load/unload order."""
import pytest

from edgeserve.policy import Action, VersionView, choose_mode, next_action, pending_load
from edgeserve.servable import ManagerState as S


def v(state, aspired=True, failed=False):
    return VersionView(state, aspired, failed)


def test_new_version_loads_before_old_unloads():
    assert next_action({1: v(S.AVAILABLE, False), 2: v(S.START)}) == Action("load", 2)
    assert next_action({1: v(S.AVAILABLE, False), 2: v(S.LOADING)}) is None
    assert next_action({1: v(S.AVAILABLE, False), 2: v(S.AVAILABLE)}) == Action("unload", 1)


def test_failed_new_version_never_takes_old_one_down():
    assert next_action({1: v(S.AVAILABLE, False), 2: v(S.END, failed=True)}) is None


def test_nothing_aspired_unloads_everything():
    assert next_action({1: v(S.AVAILABLE, False)}) == Action("unload", 1)


def test_newest_aspired_version_loads_first():
    assert next_action({1: v(S.START), 2: v(S.START), 3: v(S.START)}) == Action("load", 3)


def test_unload_comes_before_load():
    views = {1: v(S.AVAILABLE, False), 2: v(S.AVAILABLE), 3: v(S.START)}
    assert next_action(views) == Action("unload", 1)


def test_settled_model_has_no_action():
    assert next_action({1: v(S.END, False), 2: v(S.AVAILABLE)}) is None
    assert next_action({}) is None


def test_resource_preserving_unloads_old_before_loading_new():
    views = {1: v(S.AVAILABLE, False), 2: v(S.START)}
    assert next_action(views, preserve_resources=True) == Action("unload", 1)
    views = {1: v(S.END, False), 2: v(S.START)}
    assert next_action(views, preserve_resources=True) == Action("load", 2)


def test_resource_preserving_keeps_old_while_nothing_new_waits():
    # The new version failed for good: nothing to make room for, the old one stays.
    views = {1: v(S.AVAILABLE, False), 2: v(S.END, failed=True)}
    assert next_action(views, preserve_resources=True) is None
    views = {1: v(S.AVAILABLE, False), 2: v(S.LOADING)}
    assert next_action(views, preserve_resources=True) is None


def test_pending_load_is_the_newest_untried_aspired_version():
    assert pending_load({1: v(S.START), 3: v(S.START), 4: v(S.START, False)}) == 3
    assert pending_load({1: v(S.AVAILABLE), 2: v(S.END, failed=True)}) is None


@pytest.mark.parametrize("policy, need, free, reclaimable, busy, mode", [
    ("auto", 10, 25, 12, False, "availability"),  # both fit
    ("auto", 10, 5, 12, False, "resource"),  # fits once the old one is gone
    ("auto", 30, 5, 12, False, "refuse"),  # never fits: nothing is unloaded for it
    ("auto", 30, 5, 12, True, "wait"),  # another unload may free memory
    ("resource", 10, 25, 12, False, "resource"),  # asked for, even when both fit
    ("availability", 10, 5, 12, False, "refuse"),  # asked never to drop the old first
    ("availability", 10, 25, 0, False, "availability"),
])
def test_choose_mode_from_the_budget(policy, need, free, reclaimable, busy, mode):
    assert choose_mode(policy, need, free, reclaimable, busy) == mode
