"""Every move of the state tables, both ways: allowed moves pass, all others raise."""

import itertools

import pytest

from activator.service import Service, Slot
from activator.states import PHASES, TRANSITIONS, InvalidTransition, P, Phase, S, State

from factory import Changes, unit

ALL_MOVES = [(a, b) for a, b in itertools.product(State, State) if a is not b]
ALL_PHASE_MOVES = [(a, b) for a, b in itertools.product(Phase, Phase) if a is not b]


def slot_in(state: State) -> Slot:
    service = Service(unit(instances=2), Changes())
    slot = service.slots[0]
    slot.state = state
    return slot


@pytest.mark.parametrize("old,new", ALL_MOVES, ids=lambda s: s.value)
def test_slot_moves_follow_the_table(old, new):
    slot = slot_in(old)
    changes = slot.service.on_change
    if new in TRANSITIONS[old]:
        slot.enter(new)
        assert slot.state is new and changes.count == 1
    else:
        with pytest.raises(InvalidTransition, match=f"web.1: no transition from {old.value} to {new.value}"):
            slot.enter(new)
        assert slot.state is old and changes.count == 0


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_entering_the_same_state_changes_nothing(state):
    slot = slot_in(state)
    slot.enter(state)
    assert slot.state is state and slot.service.on_change.count == 0


def test_the_table_covers_every_state_and_names_only_states():
    assert set(TRANSITIONS) == set(State)
    assert all(state not in TRANSITIONS[state] for state in State)
    assert all(isinstance(t, State) for targets in TRANSITIONS.values() for t in targets)


@pytest.mark.parametrize("old,new", ALL_PHASE_MOVES, ids=lambda p: p.value)
def test_phase_moves_follow_the_table(old, new):
    service = Service(unit(), Changes())
    service.phase = old
    if new in PHASES[old]:
        service.enter(new)
        assert service.phase is new
    else:
        with pytest.raises(InvalidTransition):
            service.enter(new)
        assert service.phase is old


def test_stopping_is_for_good():
    assert PHASES[P.STOPPING] == frozenset()


def test_fail_keeps_a_stopping_unit_stopping_and_says_why():
    service = Service(unit(), Changes())
    service.phase = P.STOPPING
    service.fail("required unit db failed")
    assert service.phase is P.STOPPING and service.state is S.FAILED
    other = Service(unit(), Changes())
    other.phase = P.ACTIVE
    other.fail("internal error")
    assert other.phase is P.FAILED and other.failure == "internal error"
