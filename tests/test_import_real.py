"""`activator import` on real configurations of public projects (fixtures/import/README.md).

For each: the translation matches its reviewed snapshot (fixtures/import/expected/), every
unit file written loads back as YAML, and `activator check` accepts the units, with the
programs they name stubbed on PATH. What only the image can provide (a program at an absolute
path, a user account, a directory) is the one kind of error allowed: it is the machine's, not
the translation's. UPDATE_SNAPSHOTS=1 writes the snapshots anew, for review.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import"
EXPECTED = FIXTURES / "expected"
MACHINE_SPECIFIC = re.compile(
    r"exec: program '/[^']*' not found|no user named|no group named|does not exist|"
    r"exec: program '\.\./[^']*' not found")

CASES = ([(p.name, [p]) for p in sorted((FIXTURES / "circus").glob("*.ini"))]
         + [(p.name, [p]) for p in sorted((FIXTURES / "supervisord").glob("*.conf"))]
         + [("systemd", sorted((FIXTURES / "systemd").iterdir()))])


def run_import(files, out: Path, *extra):
    return subprocess.run([sys.executable, "-m", "activator", "import", *map(str, files),
                           "--out", str(out), *extra], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def snapshot(result, out: Path) -> str:
    parts = [f"exit {result.returncode}", result.stdout.replace(str(FIXTURES) + "/", "")
             .replace(str(out), "OUT"), result.stderr]
    for unit in sorted(out.glob("*.yaml")) if out.is_dir() else []:
        parts.append(f"--- {unit.name}\n" + unit.read_text().replace(str(FIXTURES) + "/", ""))
    return "\n".join(parts)


def stub_programs(units: Path, bin_dir: Path) -> None:
    bin_dir.mkdir()
    for unit in units.glob("*.yaml"):
        command = yaml.safe_load(unit.read_text())["exec"]
        program = command[0] if isinstance(command, list) else shlex.split(command)[0]
        if "/" not in program and "$(" not in program:
            stub = bin_dir / program
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)


@pytest.mark.parametrize("name,files", CASES, ids=[c[0] for c in CASES])
def test_real_configuration(tmp_path, name, files):
    out = tmp_path / "units"
    result = run_import(files, out)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    text = snapshot(result, out)
    expected = EXPECTED / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        EXPECTED.mkdir(exist_ok=True)
        expected.write_text(text)
    assert text == expected.read_text()
    units = list(out.glob("*.yaml"))
    for unit in units:
        assert isinstance(yaml.safe_load(unit.read_text()), dict)
    if not units:
        return
    stub_programs(out, tmp_path / "bin")
    check = subprocess.run([sys.executable, "-m", "activator", "check", "--units", str(out)],
                           capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT),
                                "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    problems = [line for line in check.stdout.splitlines()
                if ": unit " in line and " warning: " not in line]
    unexpected = [line for line in problems if not MACHINE_SPECIFIC.search(line)]
    assert not unexpected, check.stdout


def test_fixtures_are_at_least_thirty_real_files():
    files = [p for d in ("circus", "supervisord", "systemd") for p in (FIXTURES / d).iterdir()]
    assert len(files) >= 30
