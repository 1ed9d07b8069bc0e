"""The reload's diff (reloadplan.py), worked out without binding or starting anything."""

from activator.model import Model
from activator.reloadplan import open_sockets, plan_sockets, plan_units
from activator.states import P, S

from factory import service, socket, unit


def model(*units):
    from types import MappingProxyType
    return Model(MappingProxyType({u.name: u for u in units}), (tuple(u.name for u in units),), (), ())


def test_sockets_renamed_swapped_fresh_rebound_adjusted_kept():
    a, b = socket("a", "tcp://127.0.0.1:8000"), socket("b", "tcp://127.0.0.1:8001")
    c = socket("c", "tcp://127.0.0.1:8002")
    d = socket("d", "tcp://127.0.0.1:8003")
    e = socket("e", "tcp://127.0.0.1:8004")
    now = open_sockets({"a": a, "b": b, "c": c, "d": d, "e": e})
    swapped_a = socket("a", "tcp://127.0.0.1:8001")
    swapped_b = socket("b", "tcp://127.0.0.1:8000", backlog=10)
    moved_c = socket("c", "tcp://127.0.0.1:9000")
    rebound_d = socket("d", "tcp://127.0.0.1:8003", reuse_port=True)
    new = model(unit("web", sockets=(swapped_a, swapped_b, moved_c, rebound_d, e)))
    plan = plan_sockets(now, new)
    assert plan.renamed == {"a": "b", "b": "a"}
    assert [s.name for s in plan.fresh] == ["c"]
    assert plan.rebinding == {"web": [rebound_d]}
    # A socket's name is part of its spec: a renamed socket takes its new spec in place.
    assert [s.name for s in plan.adjusted] == ["a", "b"] and [s.name for s in plan.kept] == ["e"]


def test_units_removed_added_restarted_rescaled_unchanged_revived():
    services = {name: service(name) for name in ("gone", "same", "changed", "scaled", "dep")}
    services["scaled"] = service("scaled", instances=2)
    services["dep"].failure = "required unit db failed"
    new = model(unit("same"), unit("changed", description="new"), unit("scaled", instances=4),
                unit("dep"), unit("fresh"))
    plan = plan_units(services, new, rebinding={})
    assert plan.removed == ["gone"] and plan.added == ["fresh"]
    assert plan.restarted == ["changed"] and plan.rescaled == ["scaled"]
    assert plan.unchanged == ["same", "dep"] and plan.revived == ["dep"]


def test_a_unit_that_gave_up_or_rebinds_is_restarted_not_rescaled():
    services = {"gave": service("gave", instances=2), "rebind": service("rebind", instances=2)}
    services["gave"].slots[0].state = S.FAILED
    new = model(unit("gave", instances=3), unit("rebind", instances=3))
    plan = plan_units(services, new, rebinding={"rebind": []})
    assert plan.restarted == ["gave", "rebind"] and plan.rescaled == []


def test_a_unit_being_removed_is_left_alone():
    services = {"web": service("web", phase=P.STOPPING)}
    plan = plan_units(services, model(unit("web", description="x")), rebinding={})
    assert plan == plan.replace(removed=[], added=[], restarted=[], rescaled=[], unchanged=[], revived=[])
