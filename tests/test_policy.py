"""The version policy as a pure function: what a user sees as load/unload order."""
from edgeserve.policy import Action, VersionView, next_action
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


def test_loading_can_be_held_back():
    assert next_action({2: v(S.START)}, loading_allowed=False) is None
