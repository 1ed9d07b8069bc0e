"""What sd_notify fields mean (readiness.py): effects in the order they are applied."""

from activator.readiness import Effect, allowed, effects


def test_every_field_in_order_main_pid_first_ready_last():
    fields = {"READY": "1", "STATUS": "up", "MAINPID": "42", "ERRNO": "5", "EXTEND_TIMEOUT_USEC": "2000000",
              "WATCHDOG_USEC": "500", "WATCHDOG": "1", "FDSTORE": "1", "FDNAME": "db",
              "FDSTOREREMOVE": "1", "STOPPING": "1", "RELOADING": "1"}
    assert effects(fields, with_fds=True) == [
        (Effect.MAIN_PID, 42), (Effect.STATUS, "up"), (Effect.ERRNO, 5), (Effect.EXTEND_START, 2.0),
        (Effect.WATCHDOG_INTERVAL, 500), (Effect.WATCHDOG_PING, None), (Effect.FDSTORE, "db"),
        (Effect.FDSTORE_REMOVE, "db"), (Effect.STOPPING, None), (Effect.RELOADING, None),
        (Effect.READY, None)]


def test_bad_numbers_and_unknown_values_mean_nothing():
    assert effects({"MAINPID": "x", "ERRNO": "", "READY": "0", "WATCHDOG": "2", "MAINPID2": "1"}, False) == []
    assert effects({"MAINPID": "0"}, False) == [] and effects({"MAINPID": "-3"}, False) == []


def test_fdstore_needs_descriptors_and_a_removal_needs_a_name():
    assert effects({"FDSTORE": "1"}, with_fds=False) == []
    assert effects({"FDSTORE": "1"}, with_fds=True) == [(Effect.FDSTORE, "stored")]
    assert effects({"FDSTOREREMOVE": "1"}, with_fds=False) == []


def test_watchdog_trigger():
    assert effects({"WATCHDOG": "trigger"}, False) == [(Effect.WATCHDOG_TRIGGER, None)]


def test_notify_access():
    assert allowed("all", 7, 1) and allowed("main", 1, 1)
    assert not allowed("main", 7, 1) and not allowed("none", 1, 1)
