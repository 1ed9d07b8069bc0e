"""activator's times without `datetime` (log.py): the same text datetime would write, and back."""

from datetime import datetime, timezone

from hypothesis import given, strategies as st

from activator.log import epoch_of, rfc3339


@given(st.floats(min_value=0, max_value=7e9, allow_nan=False))
def test_rfc3339_is_datetimes_to_the_millisecond(wall):
    expected = datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")
    assert rfc3339(wall) == expected.replace("+00:00", "Z")


@given(st.integers(min_value=0, max_value=7_000_000_000_000))
def test_epoch_of_reads_it_back(milliseconds):
    wall = milliseconds / 1000
    assert abs(epoch_of(rfc3339(wall)) - wall) < 1e-6
