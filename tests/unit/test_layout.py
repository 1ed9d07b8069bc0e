"""The sizes we keep (modules under 600 lines, classes under 400, functions under 60) and no
import circle in activator/: `scripts/rooms` says which room is past its size."""

import subprocess
import sys
from pathlib import Path

ROOMS = Path(__file__).resolve().parents[2] / "scripts" / "rooms"


def test_every_room_within_its_size_and_no_import_circle():
    result = subprocess.run([sys.executable, str(ROOMS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_check_finds_a_circle_and_an_oversized_function():
    """Negative control: the checker itself reports what it is meant to."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("rooms", str(ROOMS))
    rooms = importlib.util.module_from_spec(importlib.util.spec_from_loader("rooms", loader))
    loader.exec_module(rooms)
    assert rooms.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    import ast
    body = "def f():\n" + "    x = 1\n" * 70
    assert rooms.oversized("f.py", ast.parse(body), body.count("\n")) == [
        "f.py:1: function f of 71 lines (limit 60)"]
