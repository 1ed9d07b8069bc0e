"""Writing unit files into a temporary tree and loading them, for the tests of the loader."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from activator import model as unitmodel
from activator import units

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Stack:
    """A tree of units directories under `root`; `units` is the first (and default) one."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.units = self.root / "units"
        self.units.mkdir(parents=True, exist_ok=True)
        self.environ = {"PATH": PATH}

    def write(self, name: str, text: str | bytes, directory: Path | str | None = None) -> Path:
        """Write `text` (dedented) to `name` under `directory` (default: the units directory)."""
        base = self.units if directory is None else self.root / directory
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def unit(self, name: str, text: str = "", directory=None) -> Path:
        """A unit file; `exec: "true"` is added when the text has no exec."""
        text = textwrap.dedent(text).lstrip("\n")
        if not any(line.startswith("exec:") for line in text.splitlines()):
            text = "exec: \"true\"\n" + text
        return self.write(f"{name}.yaml", text, directory)

    def dirs(self, *names: str) -> list[str]:
        return [str(self.root / n) for n in names] if names else [str(self.units)]

    def load(self, *dirs: str, environ: dict | None = None) -> unitmodel.Model:
        return units.load(self.dirs(*dirs), self.environ if environ is None else environ, True)

    def failure(self, *dirs: str, environ: dict | None = None) -> unitmodel.UnitsError:
        try:
            model = self.load(*dirs, environ=environ)
        except unitmodel.UnitsError as e:
            for problem in e.problems:
                assert problem.location.file, problem
            return e
        raise AssertionError(f"expected UnitsError, got a model: {model.summary()}")

    def errors(self, *dirs: str, environ: dict | None = None) -> list[str]:
        """Every error as printed, with the temporary root taken out of file names."""
        return [self.relative(p) for p in self.failure(*dirs, environ=environ).errors]

    def error(self, *dirs: str, environ: dict | None = None) -> str:
        """The one error the files have."""
        errors = self.errors(*dirs, environ=environ)
        assert len(errors) == 1, errors
        return errors[0]

    def relative(self, problem) -> str:
        return str(problem).replace(str(self.root) + os.sep, "")


def only_unit(model: unitmodel.Model) -> unitmodel.Unit:
    assert len(model.units) == 1, list(model.units)
    return next(iter(model.units.values()))
