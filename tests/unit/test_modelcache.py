"""The model cache without a process: each kind of fact the loader records and asks again
(observed.py), and the cache file's format and trust (modelcache.py)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from activator import __version__, modelcache, observed, units
from activator.model import Model

ROOT = Path(__file__).resolve().parents[2]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VALIDATORS = {"yaml", "activator.units", "activator.unitfile", "activator.unitkeys",
              "activator.unitsockets", "activator.unitprobes", "activator.yamlsource",
              "activator.yamlhints", "activator.envfile"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def loaded(units_dir: Path, environ=None):
    """(Model, facts) of one units directory, named explicitly."""
    return units.load_observed([str(units_dir)], environ or {"PATH": PATH}, True)


def stale(facts, environ=None) -> str | None:
    key = observed.stale(facts, environ or {"PATH": PATH})
    return None if key is None else observed.describe(key)


@pytest.fixture
def stack(tmp_path):
    write(tmp_path / "units" / "web.yaml", "exec: [sleep, infinity]\n")
    return tmp_path


# --------------------------------------------------------------------------- each kind of fact

def test_nothing_changed_nothing_is_stale(stack):
    _, facts = loaded(stack / "units")
    assert stale(facts) is None


def test_a_unit_file_changed_with_the_same_size_and_mtime(stack):
    path = stack / "units" / "web.yaml"
    _, facts = loaded(stack / "units")
    before = os.stat(path)
    path.write_text("exec: [sleep, infinitx]\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    assert stale(facts) == f"{path} changed"


def test_a_listing_counts_unit_files_and_dropin_directories_only(stack):
    _, facts = loaded(stack / "units")
    write(stack / "units" / ".hidden.yaml", "exec: true\n")
    write(stack / "units" / "README", "notes\n")
    assert stale(facts) is None  # neither could change the model
    write(stack / "units" / "db.yml", "exec: true\n")
    assert stale(facts) == f"files were added to or removed from {stack / 'units'}"


@pytest.mark.parametrize("change", ["add", "change", "remove", "add-directory"])
def test_dropins_added_changed_or_removed(stack, change):
    dropins = stack / "units" / "web.d"
    if change != "add-directory":
        write(dropins / "10-a.yaml", "description: a\n")
    _, facts = loaded(stack / "units")
    if change == "add":
        write(dropins / "20-b.yaml", "description: b\n")
    elif change == "change":
        write(dropins / "10-a.yaml", "description: b\n")
    elif change == "remove":
        (dropins / "10-a.yaml").unlink()
    else:
        write(dropins / "10-a.yaml", "description: a\n")
    assert stale(facts) is not None


def test_an_environment_file_changed(stack):
    write(stack / "app.env", "A=1\n")
    write(stack / "units" / "web.yaml", "exec: [sleep, infinity]\nenvironment_file: ../app.env\n")
    model, facts = loaded(stack / "units")
    assert dict(model.units["web"].file_environment) == {"A": "1"}
    write(stack / "app.env", "A=2\n")
    assert stale(facts) == f"{stack / 'app.env'} changed"


def test_an_optional_environment_file_appeared(stack):
    write(stack / "units" / "web.yaml", "exec: [sleep, infinity]\nenvironment_file: -../app.env\n")
    _, facts = loaded(stack / "units")
    assert stale(facts) is None
    write(stack / "app.env", "A=1\n")
    assert stale(facts) is not None


def test_an_environment_variable_the_units_use(stack):
    write(stack / "units" / "web.yaml", "exec: [sleep, infinity]\nenvironment:\n  X: $(env.PORT)\n")
    _, facts = loaded(stack / "units", {"PATH": PATH})  # unset: a warning in the model
    assert stale(facts, {"PATH": PATH, "OTHER": "1"}) is None  # one the units do not use
    assert stale(facts, {"PATH": PATH, "PORT": "80"}) == "$PORT changed"
    _, facts = loaded(stack / "units", {"PATH": PATH, "PORT": "80"})
    assert stale(facts, {"PATH": PATH, "PORT": "81"}) == "$PORT changed"
    assert stale(facts, {"PATH": PATH}) == "$PORT changed"


def test_a_program_earlier_on_path_appears_or_the_one_found_goes(stack):
    first, second = stack / "bin1", stack / "bin2"
    program = write(second / "prog", "#!/bin/sh\n")
    program.chmod(0o755)
    first.mkdir()
    write(stack / "units" / "web.yaml", f"exec: [prog]\nenvironment:\n  PATH: {first}:{second}\n")
    _, facts = loaded(stack / "units")
    assert stale(facts) is None
    shadow = write(first / "prog", "#!/bin/sh\n")
    shadow.chmod(0o755)
    assert stale(facts) == f"{shadow} changed (type, mode, owner or existence)"
    shadow.unlink()
    program.chmod(0o644)  # no longer executable: the check would fail now
    assert stale(facts) == f"{program} changed (type, mode, owner or existence)"


def test_a_working_directory_that_went(stack):
    write(stack / "units" / "web.yaml", "exec: [sleep, infinity]\nworking_directory: ../work\n")
    (stack / "work").mkdir()
    _, facts = loaded(stack / "units")
    (stack / "work").rmdir()
    assert stale(facts) == f"{stack / 'work'} changed (type, mode, owner or existence)"


def test_the_account_files_when_a_user_is_looked_up(stack, monkeypatch):
    passwd = write(stack / "passwd", "root:x:0:0::/root:/bin/sh\n")
    monkeypatch.setattr(observed, "ACCOUNT_FILES", (str(passwd),))
    _, facts = loaded(stack / "units")
    assert ("read", str(passwd), observed.ACCOUNT_FILE_LIMIT) not in facts  # no lookup, no fact
    write(stack / "units" / "web.yaml", "exec: [sleep, infinity]\nuser: root\n")
    _, facts = loaded(stack / "units")
    assert stale(facts) is None
    write(stack / "passwd", "root:x:0:0::/root:/bin/bash\n")
    assert stale(facts) == f"{passwd} changed"


def test_the_user_the_checks_were_made_for(stack, monkeypatch):
    _, facts = loaded(stack / "units")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert stale(facts) == "activator runs as another user or group than when it was written"


def test_a_fact_answered_two_ways_in_one_load_never_holds():
    with observed.recording() as facts:
        observed.Environ({"A": "1"}).get("A")
        observed.Environ({"A": "2"}).get("A")
    assert stale(facts, {"A": "1"}) == stale(facts, {"A": "2"}) == "$A changed"


def test_outside_a_recording_nothing_is_kept(stack):
    assert observed.listdir(str(stack / "units"), (".yaml",)) == ["web.yaml"]
    assert observed._facts is None


def test_the_loader_imports_only_the_modules_the_build_digest_covers(stack):
    code = ("import sys; from activator import units; "
            f"units.load_observed([{str(stack / 'units')!r}], {{'PATH': {PATH!r}}}, True); "
            "print(' '.join(m for m in sys.modules if m.startswith('activator')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    imported = {m.removeprefix("activator").lstrip(".") or "__init__" for m in result.stdout.split()}
    assert imported <= set(modelcache.MODEL_SOURCES)


# --------------------------------------------------------------------------- the cache file

@pytest.fixture
def cache(stack):
    """(path of a fresh cache of the stack, the units directory)."""
    model, facts = loaded(stack / "units")
    path = stack / "units" / modelcache.FILE_NAME
    modelcache.write(str(path), [str(stack / "units")], True, facts, model)
    return path, stack / "units"


def load(cache, environ=None):
    path, units_dir = cache
    return modelcache.load(str(path), [str(units_dir)], True, environ or {"PATH": PATH})


def test_a_fresh_cache_gives_the_same_model(cache):
    path, units_dir = cache
    assert os.stat(path).st_mode & 0o777 == 0o644
    cached = load(cache)
    assert isinstance(cached, Model) and cached == loaded(units_dir)[0]
    assert [p.name for p in units_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_no_cache_file_is_no_reason(tmp_path):
    assert modelcache.load(str(tmp_path / "none"), [str(tmp_path)], True, {}) is None


def test_a_cache_for_other_directories_is_ignored(cache):
    path, units_dir = cache
    with pytest.raises(modelcache.Ignored, match="written for other units directories"):
        modelcache.load(str(path), [str(units_dir), "/elsewhere"], True, {"PATH": PATH})
    with pytest.raises(modelcache.Ignored, match="written for other units directories"):
        modelcache.load(str(path), [str(units_dir)], False, {"PATH": PATH})


def test_the_cache_file_is_no_part_of_the_listing(cache):
    assert load(cache) is not None  # written after the load, in the directory it lists


@pytest.mark.parametrize("damage,reason", [
    (lambda data: data[:len(data) // 2], "damaged (checksum)"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "damaged (checksum)"),
    (lambda data: b"garbage\n" * 10, "damaged (not a model cache)"),
    (lambda data: b"", "damaged (not a model cache)"),
    (lambda data: data.replace(b" %s " % __version__.encode(), b" 0.0.0-other ", 1),
     "written by another activator"),
    (lambda data: data.replace(b"activator-model-cache 1 ", b"activator-model-cache 2 ", 1),
     "written by another activator"),
])
def test_a_damaged_or_foreign_cache_is_ignored(cache, damage, reason):
    path, _ = cache
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(modelcache.Ignored, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load(cache)


def test_a_cache_others_may_write_is_ignored(cache):
    path, _ = cache
    path.chmod(0o664)
    with pytest.raises(modelcache.Ignored, match="writable by others than its owner"):
        load(cache)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file away")
def test_a_cache_of_another_owner_is_ignored(cache):
    path, _ = cache
    os.chown(path, 1234, 1234)
    with pytest.raises(modelcache.Ignored, match="owned by uid 1234"):
        load(cache)


class _Marker:
    """Unpickling this creates a file: proof that a payload was (or was not) unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _with_payload(path: Path, payload: bytes, checksum_ok: bool) -> None:
    data = path.read_bytes()
    first = data.split(b"\n", 1)[0]
    digest = observed.digest(payload if checksum_ok else payload + b"x").hex().encode()
    path.write_bytes(first + b"\n%d %s\n" % (len(payload), digest) + payload)


def test_a_payload_behind_a_bad_checksum_is_never_unpickled(cache, tmp_path):
    path, _ = cache
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Marker(str(marker)))
    _with_payload(path, payload, checksum_ok=False)
    with pytest.raises(modelcache.Ignored, match="checksum"):
        load(cache)
    assert not marker.exists()
    # Negative control: the same payload behind a good checksum is unpickled (and then
    # refused for not being a cache's payload), so the marker does prove it.
    _with_payload(path, payload, checksum_ok=True)
    with pytest.raises(modelcache.Ignored):
        load(cache)
    assert marker.exists()


def test_any_single_byte_corruption_is_rejected(tmp_path):
    units_dir = tmp_path / "units"
    write(units_dir / "web.yaml", "exec: [sleep, infinity]\nsockets:\n  http: 8000\n")
    model, facts = loaded(units_dir)
    path = units_dir / modelcache.FILE_NAME
    modelcache.write(str(path), [str(units_dir)], True, facts, model)
    original = path.read_bytes()
    assert modelcache.load(str(path), [str(units_dir)], True, {"PATH": PATH}) == model

    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def corrupted(data):
        position = data.draw(st.integers(0, len(original) - 1), label="position")
        value = data.draw(st.integers(0, 255).filter(lambda v: v != original[position]), label="value")
        path.write_bytes(original[:position] + bytes([value]) + original[position + 1:])
        with pytest.raises(modelcache.Ignored):
            modelcache.load(str(path), [str(units_dir)], True, {"PATH": PATH})

    corrupted()


def test_a_file_that_is_no_cache_is_never_replaced_or_removed(stack):
    model, facts = loaded(stack / "units")
    other = write(stack / "precious", "not a cache\n")
    with pytest.raises(modelcache.NotACache):
        modelcache.write(str(other), [str(stack / "units")], True, facts, model)
    modelcache.remove(str(other))
    assert other.read_text() == "not a cache\n"


def test_location_default_option_environment_and_off():
    assert modelcache.location(None, {}, ["/u", "/v"]) == "/u/.activator-model"
    assert modelcache.location("/c", {"ACTIVATOR_CACHE": "/e"}, ["/u"]) == "/c"
    assert modelcache.location(None, {"ACTIVATOR_CACHE": "/e"}, ["/u"]) == "/e"
    assert modelcache.location("off", {"ACTIVATOR_CACHE": "/e"}, ["/u"]) is None
    assert modelcache.location(None, {"ACTIVATOR_CACHE": "off"}, ["/u"]) is None


def modules_of_a_cached_boot(units_dir, then: str = "pass") -> set[str]:
    """The modules a fresh interpreter holds once the init has taken its Model from a fresh
    cache (and run `then`, more imports of the boot)."""
    code = ("import sys; from activator import cli; "
            f"source, _ = cli._model_source([{str(units_dir)!r}], None); "
            "assert source.loader is None and source.cached is not None, source.ignored; "
            f"{then}; print(' '.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PATH": PATH, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_init_on_a_fresh_cache_forks_no_loader_and_imports_no_validator(cache):
    path, units_dir = cache
    imported = modules_of_a_cached_boot(units_dir)
    assert "activator.modelcache" in imported
    assert not imported & (VALIDATORS | {"hashlib", "pickle"})


def test_what_the_init_imports_before_its_first_service_leaves_out_re_and_json(cache):
    """re and json (about 4 ms of imports) come after the first spawn: the first status
    write and the control socket's first request import them."""
    path, units_dir = cache
    imported = modules_of_a_cached_boot(units_dir, "from activator import log, status; "
                                        "from activator.manager import Manager; "
                                        "from activator.sockets import BindError")
    assert "activator.manager" in imported
    assert not imported & {"re", "json"}
