"""Dependencies (#14 "Dependencies", ruling 9 of #23): every third-party module the product
imports is declared, floors sit past known CVEs, and requirements.lock pins, with hashes, a
version of every declared dependency that its specifier allows."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
TEST = [Requirement(r) for r in PROJECT["optional-dependencies"]["test"]]
# Floors below which a version has a published vulnerability the platform would be exposed to.
CVE_FLOORS = {"aiohttp": "3.12.14", "starlette": "0.47.2", "jinja2": "3.1.6", "orjson": "3.9.15"}


def imported_modules(package: Path) -> set[str]:
    modules = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_imported_distribution_is_declared() -> None:
    """Seen: starlette was imported but not declared."""
    declared = {canonicalize_name(r.name) for r in RUNTIME}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in imported_modules(ROOT / "src" / "cocoon_platform"):
        if module in sys.stdlib_module_names or module in ("cocoon_platform", "cocoon_simulator"):
            continue
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, f"{module} is imported but installed by no distribution"
        if not names & declared:
            missing[module] = names
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_floors_sit_past_known_vulnerabilities() -> None:
    floors = {canonicalize_name(r.name): r.specifier for r in RUNTIME}
    for name, fixed in CVE_FLOORS.items():
        assert name in floors, f"{name} is not declared"
        lowest = [Version(s.version) for s in floors[name] if s.operator in (">=", "==", "~=")]
        assert lowest and min(lowest) >= Version(fixed), f"{name} {floors[name]} allows versions before {fixed}"


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2] if text.startswith("#") else text)
    pins: dict[str, Version] = {}
    for entry in entries:
        head = entry.split(" ", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        name, _, version = head.partition("==")
        assert version, f"not pinned: {head}"
        assert "--hash=sha256:" in entry, f"no hash for {head}"
        pins[canonicalize_name(name.split("[")[0])] = Version(version)
    for requirement in RUNTIME + TEST:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name} {pins[name]}, outside {requirement.specifier}: run make lock"
        )
