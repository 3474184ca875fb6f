"""Community formulas as they are (issue 16): the published redis and haproxy formulas,
unmodified, bake into container images whose Salt service states mean what they mean on a
machine: what runs when the image starts, under monit, restarted when it dies.

The formulas come from ../shared/formulas beside the checkout (read-only; never copied into
the repository), referred to as a user's workbench.toml would: `../shared/formulas/redis-formula`
relative to the checkout. The bakes run in a copy of the checkout (images/, salt/,
tests/roles/, plus the `services` test role of tests/e2e/formulas_tree) whose parent holds a
link to ../shared. One parallel bake serves the tests of what works (redis, haproxy and
`services`), another those of what must fail.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from tests.support.config import REPO, config_data, write_config
from workbench.build import bake
from workbench.core import config, engine
from workbench.core.errors import BakeFailed
from workbench.release import registry, target

SHARED = REPO.parent / "shared"
FORMULAS = SHARED / "formulas"
HAVE_FORMULAS = all((FORMULAS / f"{name}-formula").is_dir() for name in ("redis", "haproxy"))
needs_formulas = pytest.mark.skipif(
    not HAVE_FORMULAS, reason=f"{FORMULAS} (the published redis and haproxy formulas) is not beside the checkout"
)
TREE = Path(__file__).parent / "formulas_tree"

# As the README shows them: the formula's directory, its state, the pillar in salt/pillar/.
FORMULA_ROLES: dict[str, dict[str, Any]] = {
    "redis": {
        "description": "redis, from the community redis formula",
        "states": ["redis"],
        "formulas": ["../shared/formulas/redis-formula"],
        "ports": [6379],
    },
    "haproxy": {
        "description": "haproxy, from the community haproxy formula",
        "states": ["haproxy"],
        "formulas": ["../shared/formulas/haproxy-formula"],
        "ports": [80, 8404],
        "health": "/health",
    },
}
SERVICES_ROLE: dict[str, Any] = {
    "description": "Service states as formulas write them (tests/e2e/formulas_tree)",
    "states": ["services"],
    "ports": [8081, 8082, 8083],
    "tests": "tests/roles/services_checks.py",
}

# Bakes that must fail, each naming its states. No common states: seconds, not minutes.
FAILING_STATES = {
    "nosuchservice": (
        "no-such-daemon:\n  service.running: []\n"
        "frobnicate:\n  pkg.installed:\n    - name: frobnicate-does-not-exist\n"
        "frobnicate-daemon:\n  service.running:\n    - require:\n      - pkg: frobnicate\n"
    ),
    "kernel": (
        "vm.overcommit_memory:\n  sysctl.present:\n    - value: 1\n"
        "br_netfilter:\n  kmod.present: []\n"
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<tmp>/main (the checkout's copy), <tmp>/tiny (the tiny failing roles), <tmp>/shared (a link)."""
    root = tmp_path_factory.mktemp("formulas")
    main = root / "main"
    skip = shutil.ignore_patterns("__pycache__")
    for part in ("images", "salt", "tests/roles"):
        shutil.copytree(REPO / part, main / part, ignore=skip)
    shutil.copytree(TREE, main, dirs_exist_ok=True)
    tiny = root / "tiny"
    shutil.copytree(REPO / "images", tiny / "images")
    shutil.copytree(REPO / "salt/_modules", tiny / "salt/_modules", ignore=skip)
    (tiny / "salt/pillar").mkdir(parents=True)
    (tiny / "salt/pillar/top.sls").write_text("base: {}\n")
    (tiny / "tests/roles").mkdir(parents=True)
    for name, text in FAILING_STATES.items():
        (tiny / "salt" / name).mkdir()
        (tiny / "salt" / name / "init.sls").write_text(text)
        (tiny / "tests/roles" / f"test_{name}.py").write_text("def test_never_runs(host):\n    assert False\n")
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    return root


def formulas_config(prefix: str, state: Path, checkout: Path, roles: dict[str, Any], **workbench: Any) -> config.Config:
    full = config_data(prefix, state)
    # Only the sections a bake and a promote read: the others name the shipped roles.
    data = {key: full[key] for key in ("workbench", "base", "cache", "builder") if key in full}
    data["workbench"].update(checkout=str(checkout), default_role=next(iter(roles)), **workbench)
    # Every role at once: a bake waits on the engine, the cache and its tests as much as it computes.
    data["builder"] = {**data.get("builder", {}), "parallel": len(roles)}
    data["registry"] = {"port": free_port()}
    data["environments"] = {"staging": {}}
    data["roles"] = roles
    return config.load(write_config(state / f"{checkout.name}-{prefix}.toml", data))


@pytest.fixture(scope="module")
def main_config(wb_prefix: str, wb_state: Path, tree: Path, base_image: Any) -> config.Config:
    roles = {**(FORMULA_ROLES if HAVE_FORMULAS else {}), "services": SERVICES_ROLE}
    if HAVE_FORMULAS:
        # The redis formula as it comes: salt/pillar/top.sls gives its pillar to role redis only.
        # Its provisioning fails: the tests never run.
        roles["redisdefaults"] = {
            "states": ["redis"], "formulas": ["../shared/formulas/redis-formula"], "tests": "tests/roles/test_redis.py",
        }
    return formulas_config(wb_prefix, wb_state, tree / "main", roles)


@pytest.fixture(scope="module")
def main_bake(main_config: config.Config) -> tuple[dict[str, bake.BakeResult], str]:
    """Every role of the copy baked at once: the results of those that work, and the error of
    redisdefaults, which must fail (the others are then found again, in well under a second)."""
    roles = list(main_config.roles)
    try:
        bake.bake(main_config, roles)
    except BakeFailed as exc:
        failure = str(exc)
    else:
        failure = ""
    good = [role for role in roles if role != "redisdefaults"]
    return {result.role: result for result in bake.bake(main_config, good)}, failure


@pytest.fixture(scope="module")
def baked(main_bake: tuple[dict[str, bake.BakeResult], str]) -> dict[str, bake.BakeResult]:
    return main_bake[0]


def image_listing(tag: str, script: str) -> str:
    """What `script` prints in a container of `tag` that runs it instead of the image's command."""
    out = engine.client().containers.run(tag, ["sh", "-c", script], entrypoint=[], remove=True)
    return str(out.decode())


# --- the formulas, unmodified -------------------------------------------------------------------


@needs_formulas
@pytest.mark.parametrize("role", ["redis", "haproxy"])
def test_formula_bakes_unmodified_and_passes_its_tests(baked: dict[str, bake.BakeResult],
                                                      main_config: config.Config, role: str) -> None:
    result = baked[role]
    image = engine.get_image(result.tag)
    assert image is not None and image.labels["workbench.verify"] == "passed"
    assert re.match(r"^\d+ passed in ", result.tests), result.tests
    # The formula was read where it is published, beside the checkout.
    formula = main_config.root / main_config.role(role).formulas[0]
    assert formula.resolve() == (FORMULAS / f"{role}-formula").resolve()


# --- service states: what runs, and nothing during the bake ------------------------------------


def test_services_role_runs_what_its_states_declare(baked: dict[str, bake.BakeResult]) -> None:
    # Its tests (formulas_tree/tests/roles/services_checks.py) ran against a fresh container:
    # a unit-only, an init-script-only and a forking service run, restarted when killed;
    # dead and disabled ones do not; watch restarts and reloads succeeded in the bake.
    assert re.match(r"^\d+ passed in ", baked["services"].tests), baked["services"].tests


def test_no_daemon_ran_during_the_bake(baked: dict[str, bake.BakeResult]) -> None:
    # The role's states tried service, /usr/sbin/service, invoke-rc.d, the init script,
    # systemctl and start-stop-daemon: a daemon started by any of them would have noted it
    # in the image.
    tag = baked["services"].tag
    assert image_listing(tag, "ls -A /var/lib/wbt-started; echo end").split() == ["end"]
    # The fences are gone from the image: the real start-stop-daemon, no hook, no diversion.
    script = (
        "ls /lib/lsb/init-functions.d; dpkg-divert --list '*start-stop-daemon*'; "
        "start-stop-daemon --version | head -1; ls /sbin/start-stop-daemon.REAL 2>&1; true"
    )
    out = image_listing(tag, script)
    assert "01-workbench-bake" not in out and "diversion" not in out, out
    assert "start-stop-daemon 1." in out and "No such file" in out, out


@pytest.fixture(scope="module")
def failures(wb_prefix: str, wb_state: Path, tree: Path, base_image: Any) -> dict[str, str]:
    """The tiny bakes that must fail, in parallel: each role's part of the error, by role."""
    roles: dict[str, Any] = {name: {"command": ["sleep", "infinity"]} for name in FAILING_STATES}
    cfg = formulas_config(wb_prefix, wb_state, tree / "tiny", roles, common_states=[])
    with pytest.raises(BakeFailed) as failure:
        bake.bake(cfg, list(roles))
    assert not engine.images({engine.PREFIX_LABEL: cfg.prefix, "workbench.candidate": "true"}), "a candidate left"
    return by_role(str(failure.value), roles)


def by_role(text: str, roles: Any) -> dict[str, str]:
    """A BakeFailed's text split by role: `<role>: Salt 2 state(s) failed; ...` and its lines."""
    parts = re.split(r"^(?=(?:" + "|".join(roles) + r"): )", text, flags=re.MULTILINE)
    return {part.split(":", 1)[0]: part for part in parts if part.split(":", 1)[0] in roles}


@needs_formulas
def test_formula_defaults_a_container_cannot_fail_naming_the_state(
    main_bake: tuple[dict[str, bake.BakeResult], str],
) -> None:
    # Without the role's pillar, the redis formula sets vm.overcommit_memory: refused, by name,
    # and nothing else fails.
    text = by_role(main_bake[1], ["redisdefaults"])["redisdefaults"]
    assert "Salt 1 state(s) failed" in text, text
    assert "redis_overcommit_memory (sysctl.present, sls redis.server.install)" in text
    assert "a container cannot set the kernel parameter vm.overcommit_memory = 1" in text
    assert "Turn this off in the formula's pillar" in text
    assert "1 of " in main_bake[1], "only redisdefaults fails"


def test_a_service_that_does_not_exist_fails_the_bake_naming_it(failures: dict[str, str]) -> None:
    text = failures["nosuchservice"]
    missing = "no-such-daemon (service.running, sls nosuchservice): The named service no-such-daemon is not available"
    assert missing in text
    assert "frobnicate (pkg.installed, sls nosuchservice)" in text
    assert "frobnicate-daemon (service.running, sls nosuchservice): One or more requisite failed" in text


def test_what_a_container_cannot_do_fails_the_bake_naming_it(failures: dict[str, str]) -> None:
    text = failures["kernel"]
    assert "Salt 2 state(s) failed" in text, text
    assert "vm.overcommit_memory (sysctl.present, sls kernel)" in text
    assert "a container cannot set the kernel parameter vm.overcommit_memory = 1" in text
    assert "br_netfilter (kmod.present, sls kernel)" in text
    assert "a container cannot load kernel modules" in text


# --- a release of a formula role -----------------------------------------------------------------


@pytest.fixture(scope="module")
def release_config(wb_prefix: str, wb_state: Path, tree: Path, baked: dict[str, bake.BakeResult]) -> Iterator[Path]:
    state = wb_state / "formulas-release"
    state.mkdir(exist_ok=True)
    cfg = formulas_config(wb_prefix, state, tree / "main", FORMULA_ROLES)
    try:
        yield cfg.path
    finally:
        for container in engine.containers({engine.PREFIX_LABEL: cfg.prefix}):
            if container.labels.get(target.ENV_LABEL) == "staging":
                engine.remove_container(container)
        for network in engine.client().networks.list(names=[f"{cfg.prefix}-staging"]):
            network.remove()
        registry.down(cfg)
        shutil.rmtree(state, ignore_errors=True)


@needs_formulas
def test_promote_redis_like_the_app(baked: dict[str, bake.BakeResult], release_config: Path) -> None:
    # No HTTP health check for redis: the release is healthy when its container keeps running.
    fab("release.promote", "redis", "--env", "staging", "--message", "community formula",
        config=release_config, check=True)
    listed = json.loads(fab("release.list", "--json", config=release_config, check=True).stdout)
    release = next(r for r in listed if r["role"] == "redis")
    assert (release["environment"], release["version"]) == ("staging", baked["redis"].version)
    containers = [c for c in engine.containers({engine.ROLE_LABEL: "redis", target.ENV_LABEL: "staging"})
                  if c.labels.get(target.RELEASE_LABEL) == release["tag"]]
    assert containers and containers[0].status == "running"
    code, out = containers[0].exec_run(["redis-cli", "ping"])
    assert (code, out.strip()) == (0, b"PONG")
