"""What the end of a process means and what follows it (service.py), without processes."""

import signal

import pytest

from activator.service import (End, Outcome, after_exit, backoff, exit_status, how_it_ended,
                               is_clean, overall_state, should_restart)
from activator.states import Result, S, StopReason

from factory import process, service, unit

TERM = 128 + signal.SIGTERM
KILL = 128 + signal.SIGKILL


def test_exit_status_is_the_shells():
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == KILL


@pytest.mark.parametrize("status,result,clean", [
    (0, None, True), (TERM, None, True), (128 + signal.SIGHUP, None, True), (1, None, False),
    (KILL, None, False), (0, Result.TIMEOUT, False), (TERM, Result.WATCHDOG, False)])
def test_clean_is_systemds_notion(status, result, clean):
    assert is_clean(status, result) is clean


@pytest.mark.parametrize("policy,status,result,restart", [
    ("always", 0, None, True), ("no", 1, None, False),
    ("on-failure", 0, None, False), ("on-failure", 1, None, True), ("on-failure", TERM, None, False),
    ("on-abnormal", 1, None, False), ("on-abnormal", KILL, None, True),
    ("on-abnormal", 0, Result.WATCHDOG, True), ("on-abnormal", TERM, None, False)])
def test_restart_policies(policy, status, result, restart):
    assert should_restart(policy, status, result) is restart


def test_backoff_doubles_up_to_the_cap_and_a_large_restart_sec_stays():
    u = unit(restart_sec=0.1, restart_max_sec=1.0)
    assert [backoff(u, n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff(unit(restart_sec=5.0, restart_max_sec=1.0), 3) == 5.0


def test_after_exit_restarts_with_backoff_and_forgets_old_failures_after_a_long_run():
    u = unit(restart="on-failure", restart_sec=0.1, restart_max_sec=10.0)
    verdict = after_exit(u, failures=2, ran=1.0, status=1, result=None)
    assert verdict.outcome is Outcome.RESTART and verdict.failures == 3 and verdict.delay == 0.4
    verdict = after_exit(u, failures=5, ran=11.0, status=1, result=None)
    assert verdict.failures == 1 and verdict.delay == 0.1


def test_after_exit_of_a_oneshot_and_of_clean_and_failed_ends():
    assert after_exit(unit(type="oneshot"), 0, 0.1, 0, None).outcome is Outcome.FINISHED
    assert after_exit(unit(type="oneshot", restart="no"), 0, 0.1, 1, None).outcome is Outcome.FAILED
    assert after_exit(unit(type="oneshot", restart="no"), 0, 0.1, TERM, None).outcome is Outcome.FAILED
    assert after_exit(unit(restart="on-failure"), 0, 1.0, TERM, None).outcome is Outcome.EXITED
    assert after_exit(unit(restart="no"), 0, 1.0, 2, None).outcome is Outcome.FAILED
    assert after_exit(unit(restart="no"), 0, 1.0, 0, Result.TIMEOUT).outcome is Outcome.FAILED


def test_how_it_ended_reads_the_slot_first_then_the_reason():
    svc = service(instances=2)
    proc = process(svc)
    slot = proc.slot
    assert how_it_ended(slot, proc, for_good=False) is End.ON_ITS_OWN
    assert how_it_ended(slot, proc, for_good=True) is End.STOPPED
    proc.stop_reason = StopReason.RESTART
    assert how_it_ended(slot, proc, for_good=False) is End.START_AGAIN
    assert how_it_ended(slot, proc, for_good=True) is End.STOPPED
    proc.stop_reason = StopReason.STOP
    assert how_it_ended(slot, proc, for_good=False) is End.STOPPED
    slot.retiring.append(proc)
    assert how_it_ended(slot, proc, for_good=True) is End.RETIRED
    slot.retiring.clear()
    slot.candidate = proc
    assert how_it_ended(slot, proc, for_good=False) is End.REPLACEMENT_FAILED
    slot.candidate = None
    svc.leaving.append(slot)
    assert how_it_ended(slot, proc, for_good=False) is End.LEFT


def test_overall_state_shows_the_most_pressing():
    assert overall_state([S.RUNNING, S.FAILED]) is S.FAILED
    assert overall_state([S.RUNNING, S.EXITED]) is S.RUNNING
    assert overall_state([S.EXITED, S.EXITED]) is S.EXITED
    assert overall_state([]) is S.EXITED


def test_promote_makes_the_replacement_current_and_returns_the_old_one():
    svc = service(instances=2)
    old = process(svc, 1, pid=10)
    slot = old.slot
    slot.state = S.RUNNING
    new = process(svc, 1, pid=11)
    slot.proc, slot.candidate = old, new
    slot.timer = type("T", (), {"cancel": lambda self: None})()
    assert slot.promote() is old
    assert slot.proc is new and slot.candidate is None and slot.retiring == [old]
    assert slot.restarts == 1 and slot.timer is None


def test_start_times_are_kept_only_while_a_limit_can_use_them():
    """Defect: with start_limit_interval_sec 0 every start time was kept: memory grew with
    each restart of a crash loop."""
    svc = service(start_limit_interval_sec=0.0, start_limit_burst=5)
    slot = svc.slots[0]
    assert all(slot.within_start_limit(float(now)) for now in range(10_000))
    assert len(slot.starts) == 0
    limited = service(start_limit_interval_sec=10.0, start_limit_burst=3).slots[0]
    assert [limited.within_start_limit(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert limited.within_start_limit(10.5) and len(limited.starts) == 3  # the oldest forgotten
