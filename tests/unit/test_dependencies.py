"""Who may start, who fails with whom, who stops when (dependencies.py)."""

from activator.dependencies import Start, all_down, may_start, ready_to_stop, requiring
from activator.states import P, S

from factory import process, service


def stack(**specs):
    """name -> service, each given as {phase, state of its one slot, unit fields}."""
    services = {}
    for name, (phase, state, fields) in specs.items():
        svc = service(name, phase=phase, **fields)
        svc.slots[0].state = state
        services[name] = svc
    return services


def test_a_unit_waits_for_what_it_requires_wants_and_comes_after():
    for key in ("requires", "wants", "after"):
        services = stack(db=(P.PENDING, S.STARTING, {}), web=(P.PENDING, S.STARTING, {key: ("db",)}))
        assert may_start(services["web"], services) == (Start.WAIT, None)
        services["db"].phase, services["db"].slots[0].state = P.ACTIVE, S.RUNNING
        assert may_start(services["web"], services) == (Start.NOW, None)


def test_a_failed_requirement_fails_it_and_a_failed_want_does_not():
    services = stack(db=(P.ACTIVE, S.FAILED, {}), web=(P.PENDING, S.STARTING, {"requires": ("db",)}),
                     app=(P.PENDING, S.STARTING, {"wants": ("db",)}))
    assert may_start(services["web"], services) == (Start.FAIL, "db")
    assert may_start(services["app"], services) == (Start.NOW, None)


def test_unknown_wants_are_ignored():
    services = stack(web=(P.PENDING, S.STARTING, {"wants": ("nothing",), "after": ("web",)}))
    assert may_start(services["web"], services) == (Start.NOW, None)


def test_requiring_skips_units_already_failed_or_stopping():
    services = stack(db=(P.ACTIVE, S.FAILED, {}), a=(P.ACTIVE, S.RUNNING, {"requires": ("db",)}),
                     b=(P.FAILED, S.FAILED, {"requires": ("db",)}),
                     c=(P.STOPPING, S.STOPPING, {"requires": ("db",)}),
                     d=(P.ACTIVE, S.RUNNING, {"wants": ("db",)}))
    assert [s.name for s in requiring("db", services)] == ["a"]


def test_shutdown_stops_dependents_first():
    services = stack(db=(P.ACTIVE, S.RUNNING, {}), web=(P.ACTIVE, S.RUNNING, {"requires": ("db",)}),
                     log=(P.ACTIVE, S.RUNNING, {"after": ("web",)}))
    assert [s.name for s in ready_to_stop(services)] == ["log"]
    services["log"].phase = P.STOPPING
    assert [s.name for s in ready_to_stop(services)] == ["web"]  # log has no process left
    services["web"].phase = P.STOPPING
    process(services["web"])  # web still has a process: db waits
    assert ready_to_stop(services) == [] and not all_down(services)
    services["web"].slots[0].proc = None
    assert [s.name for s in ready_to_stop(services)] == ["db"]
    services["db"].phase = P.STOPPING
    assert all_down(services)
