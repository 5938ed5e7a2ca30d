"""`make demo` / `make test` install the versions the tests last passed with; the package keeps compatible ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    return [Requirement(r) for r in lines]


def test_every_dependency_of_demo_and_test_is_pinned_within_its_range():
    pins = _pins()
    for req in _requirements("demo", "test"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt (run `make constraints`)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} outside {req.specifier}"
        # a compatible range: a lower bound and an upper one, so a new major version is not pulled in
        assert any(s.operator == "<" for s in req.specifier), f"{req} has no upper bound"


def test_the_makefile_installs_under_the_constraints_and_can_refresh_them():
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs), installs
    assert re.search(r"^CONSTRAINTS \?= constraints\.txt$", makefile, re.M)
    assert re.search(r"^constraints:\n(\t.*\n)*\t\$\(BIN\)/pip freeze", makefile, re.M)
