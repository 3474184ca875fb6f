"""`make demo`: the main job from nothing, on the local Docker engine.

base -> bake app (and the frontend) -> promote to staging -> change the app's
state -> bake and promote again -> roll back by tag -> history. The change is
made in a copy of the checkout under the state directory, never in the user's
own salt/ tree; both bakes share one ledger, registry and set of role tags.
"""

from __future__ import annotations

import json
import shutil
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from workbench.build import bake
from workbench.core import progress
from workbench.core.config import Config, from_dict
from workbench.core.errors import WorkbenchError
from workbench.release import releases as release
from workbench.release.ledger import Release

ROLE = "app"
SCOPE = "demo"
# The one-line change the demo makes to the app's state (its page title), and
# to the role test that checks that title: a change comes with its test.
CHANGED_FILE = Path("salt/app/files/workbench_app.py")
CHANGED_TEST = Path("tests/roles/test_app.py")
ORIGINAL = "<h1>workbench app</h1>"
CHANGED = "<h1>workbench app, changed by the demo</h1>"
# What a copy of the checkout needs to bake: states, formulas, templates, role tests.
CHECKOUT_PARTS = ("salt", "formulas", "images", "tests/roles")


@dataclass(frozen=True)
class Observation:
    """What the environment's frontend answered after a step."""

    release: str
    changed_page: bool


@dataclass(frozen=True)
class DemoResult:
    first: Release
    second: Release
    rollback: Release
    observed: tuple[Observation, Observation, Observation]
    history: tuple[Release, ...]
    url: str


def run(config: Config, environment: str = "staging") -> DemoResult:
    env = config.environment(environment)
    if not env.frontend_port:
        raise WorkbenchError(
            f"the demo needs a frontend in {environment}: "
            f"set [environments.{environment}] frontend_port in {config.path}"
        )
    url = f"http://127.0.0.1:{env.frontend_port}"
    # On a terminal: five headings, one line per bake and release under each.
    with progress.job(SCOPE, outline=True):
        return _run(config, environment, url)


def _run(config: Config, environment: str, url: str) -> DemoResult:
    progress.step(SCOPE, f"1/5 bake {ROLE} and the frontend from the vanilla base")
    first_bake = {r.role: r for r in bake.bake(config, [ROLE, "frontend"])}[ROLE]
    progress.step(SCOPE, f"2/5 promote {first_bake.tag} to {environment}")
    first = release.promote(config, ROLE, environment, first_bake.version, message="demo: first release")
    seen_first = _observe(url)

    progress.step(SCOPE, f"3/5 change a line of {CHANGED_FILE.name} and its test (in a copy), bake again")
    changed = changed_checkout(config)
    second_bake = bake.bake_role(changed, ROLE)
    progress.step(SCOPE, f"4/5 promote {second_bake.tag} to {environment}")
    second = release.promote(changed, ROLE, environment, second_bake.version, message="demo: a changed state")
    seen_second = _observe(url)

    progress.step(SCOPE, f"5/5 roll back to {first.tag}")
    back = release.rollback(config, first.tag, message="demo: back to the first release")
    seen_back = _observe(url)

    history = tuple(release.history(config, environment, ROLE)[-3:])
    return DemoResult(first, second, back, (seen_first, seen_second, seen_back), history, url)


def changed_checkout(config: Config) -> Config:
    """A copy of the checkout with the demo's one-line change, configured like `config`."""
    copy = config.state_dir / "demo" / "checkout"
    if copy.exists():
        shutil.rmtree(copy)
    for part in CHECKOUT_PARTS:
        source = config.root / part
        if source.exists():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    for changed_file in (CHANGED_FILE, CHANGED_TEST):
        target = copy / changed_file
        text = target.read_text()
        if ORIGINAL not in text:
            raise WorkbenchError(f"the demo changes {ORIGINAL!r} in {changed_file}, which no longer holds it")
        target.write_text(text.replace(ORIGINAL, CHANGED))
    data = tomllib.loads(config.path.read_text())
    # Same state directory (ledger, registry, cache), other states.
    data["workbench"] = {**data.get("workbench", {}), "checkout": str(copy), "state_dir": str(config.state_dir)}
    return from_dict(data, config.path)


def _observe(url: str) -> Observation:
    health = json.loads(_get(f"{url}/health"))
    page = _get(f"{url}/")
    return Observation(release=str(health.get("release", "")), changed_page=CHANGED in page)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(answer.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        raise WorkbenchError(f"the frontend at {url} does not answer: {exc}") from None
