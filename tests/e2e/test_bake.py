"""Real bakes: Packer, masterless Salt, testinfra, the package cache, on the real engine.

The shipped roles bake once per session (in parallel, `--all` style); the
failure cases use tiny roles in a copy of the checkout, without the common
states, so that each costs seconds, not minutes.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from tests.support.config import REPO, config_data, write_config
from workbench.build import bake, ca, images
from workbench.core import config, engine
from workbench.core.errors import BakeFailed, VerifyFailed

SHIPPED = ["base", "app", "cache", "db"]


@pytest.fixture(scope="session")
def shipped(wb_cfg: config.Config, base_image: Any) -> dict[str, bake.BakeResult]:
    """Every shipped role, baked once (in parallel, sharing the base and the cache)."""
    return {r.role: r for r in bake.bake(wb_cfg, SHIPPED)}


def _labels(tag: str) -> dict[str, str]:
    image = engine.get_image(tag)
    assert image is not None, tag
    return dict(image.labels)


@pytest.mark.parametrize("role", SHIPPED)
def test_shipped_role_is_baked_verified_and_labelled(shipped: dict[str, bake.BakeResult], role: str,
                                                     wb_cfg: config.Config, base_image: Any) -> None:
    result = shipped[role]
    assert result.tag == f"{wb_cfg.prefix}/{role}:{result.version}"
    labels = _labels(result.tag)
    for key in images.ACCEPTED_LABELS:
        assert labels.get(key), f"{result.tag} lacks label {key}"
    assert labels["workbench.verify"] == "passed"
    assert labels["workbench.candidate"] == "false"
    assert labels["workbench.role"] == role
    assert labels["workbench.inputs"] == result.inputs
    assert labels["workbench.base"] == base_image.id
    assert re.match(r"^\d+ passed", labels["workbench.tests"]), labels["workbench.tests"]
    assert re.match(r"^[0-9a-f]{40}$", labels["workbench.git.commit"])


def test_image_carries_no_build_machinery(shipped: dict[str, bake.BakeResult]) -> None:
    tag = shipped["app"].tag
    image = engine.get_image(tag)
    assert image is not None
    assert image.attrs["Config"]["Entrypoint"] in (None, [""], [])
    assert image.attrs["Config"]["Cmd"] == ["/usr/local/sbin/workbench-init"]
    script = (
        "set -u; for p in /var/tmp/workbench-build /var/tmp/workbench-bundle.tar /etc/salt /var/cache/salt "
        "/var/log/salt /srv/salt /srv/pillar /usr/sbin/policy-rc.d /etc/apt/apt.conf.d/01workbench-proxy "
        "/packer-files; do [ -e $p ] && echo LEFT $p; done; "
        "ls /usr/local/share/ca-certificates | grep workbench-build && echo LEFT ca; "
        "ls /var/lib/apt/lists | grep -v '^lock$' | grep -v '^partial$' && echo LEFT lists; "
        "ls /var/cache/apt/archives/*.deb 2>/dev/null && echo LEFT debs; "
        "for d in /mnt /tmp /var/tmp; do [ -z \"$(ls -A $d)\" ] || echo LEFT $d; done; "
        "python3 -c 'import salt' 2>/dev/null && echo LEFT salt-module; "
        "find / -xdev -name 'salt-call' -o -xdev -name 'thin.tgz' | grep . && echo LEFT salt; "
        "echo done"
    )
    out = engine.client().containers.run(tag, ["sh", "-c", script], entrypoint=[], remove=True).decode()
    assert out.strip().splitlines()[-1] == "done"
    assert "LEFT" not in out, out
    # The host's CAs: test_the_host_ca_is_lent_to_the_build_and_never_baked_in, with one of its own.


def test_no_op_bake_rebuilds_nothing(shipped: dict[str, bake.BakeResult], wb_cfg: config.Config) -> None:
    # How fast: bench/bench_bake.py prints the no-op bake's time.
    again = bake.bake(wb_cfg, SHIPPED)
    assert all(r.cached for r in again), [r.role for r in again if not r.cached]
    assert {r.role: (r.tag, r.id) for r in again} == {k: (v.tag, v.id) for k, v in shipped.items()}


def test_hypervisor_role_tests_run_against_its_bake(baked: Callable[[str], bake.BakeResult]) -> None:
    # The netboot live image applies the hypervisor's states in a chroot and runs no tests;
    # the role baked as an image (the same states) is where tests/roles/test_hypervisor.py runs.
    tests = REPO / "tests" / "roles" / "test_hypervisor.py"
    count = sum(isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
                for node in ast.parse(tests.read_text()).body)
    result = baked("hypervisor")
    # Parametrized tests pass once per parameter: at least one pass per test function, and nothing else.
    passed = re.match(r"^(\d+) passed", result.tests)
    assert count and passed and int(passed.group(1)) >= count, result.tests
    assert not re.search(r"failed|error|skipped", result.tests), result.tests
    assert _labels(result.tag)["workbench.verify"] == "passed"


@pytest.mark.parametrize(
    "argv", [("image.bake", "--role", "app"), ("image.bake", "app"), ("image.bake:role=app",), ("image.bake:app",)]
)
def test_fab_syntaxes(shipped: dict[str, bake.BakeResult], wb_config_path: Path, argv: tuple[str, ...]) -> None:
    proc = fab(*argv, config=wb_config_path, check=True)
    assert f"{shipped['app'].tag} (cache hit, reused)" in proc.stdout


def test_fab_image_list_and_json(shipped: dict[str, bake.BakeResult], wb_config_path: Path) -> None:
    import json

    proc = fab("image.list", "--json", config=wb_config_path, check=True)
    listed = {i["tag"]: i for i in json.loads(proc.stdout)}
    for result in shipped.values():
        assert listed[result.tag]["verify"] == "passed"
        assert listed[result.tag]["inputs"] == result.inputs
        assert listed[result.tag]["size"] > 0
    text = fab("image.list", config=wb_config_path, check=True).stdout
    assert shipped["db"].tag in text and "passed" in text
    pruned = fab("image.prune", "--keep", "5", config=wb_config_path, check=True).stdout
    assert "pruned 0 image(s)" in pruned
    bad = fab("image.prune", "--keep", "0", config=wb_config_path)
    assert bad.returncode == 2 and "keep at least 1" in bad.stderr


def test_fab_bake_needs_a_known_role(wb_config_path: Path) -> None:
    proc = fab("image.bake", "nosuchrole", config=wb_config_path)
    assert proc.returncode == 2
    assert "unknown role 'nosuchrole'" in proc.stderr
    proc = fab("image.bake", config=wb_config_path)
    assert proc.returncode == 2 and "give one role" in proc.stderr


# --- tiny roles in a copy of the checkout ------------------------------------------------

TINY_STATES = {
    "good": "/etc/good.txt:\n  file.managed:\n    - contents: good\n",
    "broken": (
        "/etc/fine.txt:\n  file.managed:\n    - contents: fine\n"
        "frobnicate:\n  pkg.installed:\n    - name: frobnicate-does-not-exist\n"
    ),
    "flunk": "/etc/flunk.txt:\n  file.managed:\n    - contents: real\n",
    "restless": "stamp:\n  cmd.run:\n    - name: date +%N > /etc/stamp\n",
    "pkgrole": "hello:\n  pkg.installed:\n    - refresh: true\n",
    "nosls": "",
    "badrender": "x:\n  file.managed:\n    - name: {{ nothing.here }}\n",
    # Fetches over TLS from a server whose certificate only the lent CA vouches for
    # (its files are made by the throwaway_ca fixture).
    "catrust": (
        "ca-certificates:\n  pkg.installed:\n    - refresh: true\n"
        "/etc/catrust:\n  file.recurse:\n    - source: salt://catrust/files\n"
        "fetch-over-tls:\n  cmd.run:\n    - name: python3 /etc/catrust/check.py\n"
        "    - creates: /etc/catrust/verified\n"
        "    - require:\n      - pkg: ca-certificates\n      - file: /etc/catrust\n"
    ),
}
TINY_TESTS = {
    "flunk": "def test_content(host):\n    assert host.file('/etc/flunk.txt').content_string == 'expected'\n",
    "pkgrole": "def test_hello(host):\n    assert host.package('hello').is_installed\n",
    "catrust": (
        "def test_the_build_trusted_the_lent_ca(host):\n"
        "    assert host.file('/etc/catrust/verified').content_string == 'verified\\n'\n\n"
        "def test_the_image_does_not(host):\n"
        "    out = host.run('python3 /etc/catrust/check.py')\n"
        "    assert out.rc != 0 and 'CERTIFICATE_VERIFY_FAILED' in out.stderr, out.stderr\n"
    ),
}


@pytest.fixture(scope="session")
def tiny_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bake-checkout")
    shutil.copytree(REPO / "images", root / "images")
    (root / "salt" / "pillar").mkdir(parents=True)
    (root / "salt" / "pillar" / "top.sls").write_text("base: {}\n")
    (root / "tests" / "roles").mkdir(parents=True)
    for name, text in TINY_STATES.items():
        if name != "nosls":
            (root / "salt" / name).mkdir()
            (root / "salt" / name / "init.sls").write_text(text)
        test = TINY_TESTS.get(name, "def test_runs(host):\n    assert host.file('/etc').is_directory\n")
        (root / "tests" / "roles" / f"test_{name}.py").write_text(test)
    return root


def tiny_config(wb_prefix: str, wb_state: Path, checkout: Path, path: Path, **cache: Any) -> config.Config:
    full = config_data(wb_prefix, wb_state)
    # Only the sections a bake reads: the others refer to roles this checkout lacks.
    data = {k: full[k] for k in ("workbench", "base", "cache", "builder") if k in full}
    data["environments"] = {"sandbox": {}}
    data["workbench"].update(checkout=str(checkout), common_states=[], default_role="good")
    data["roles"] = {name: {"command": ["sleep", "infinity"]} for name in TINY_STATES}
    data["roles"]["restless"]["idempotence_exempt"] = cache.pop("exempt", [])
    data["cache"] = {**data.get("cache", {}), **cache}
    return config.load(write_config(path, data))


@pytest.fixture(scope="session")
def tiny(wb_prefix: str, wb_state: Path, tiny_checkout: Path, base_image: Any) -> config.Config:
    return tiny_config(wb_prefix, wb_state, tiny_checkout, wb_state / "tiny.toml")


def assert_nothing_left(cfg: config.Config, role: str) -> None:
    prefix = {engine.PREFIX_LABEL: cfg.prefix}
    assert not [i.tags for i in engine.images({**prefix, engine.ROLE_LABEL: role})], f"{role} left an image"
    assert not [c.name for c in engine.containers(prefix) if f"-{role}-" in c.name], f"{role} left a container"
    assert not engine.images({**prefix, images.CANDIDATE_LABEL: "true"})
    assert images.latest(cfg, role) is None


def test_broken_state_fails_naming_it_and_leaves_nothing(tiny: config.Config) -> None:
    with pytest.raises(BakeFailed) as failure:
        bake.bake(tiny, ["broken"])
    text = str(failure.value)
    assert "1 state(s) failed" in text and "frobnicate (pkg.installed, sls broken)" in text
    assert_nothing_left(tiny, "broken")


@pytest.mark.parametrize(("role", "message"), [
    ("nosls", "No matching sls found for 'nosls'"),
    ("badrender", "Rendering SLS 'base:badrender' failed"),
])
def test_uncompilable_states_fail(tiny: config.Config, role: str, message: str) -> None:
    with pytest.raises(BakeFailed, match="could not compile the states") as failure:
        bake.bake(tiny, [role])
    assert message in str(failure.value)
    assert_nothing_left(tiny, role)


def test_failing_role_test_leaves_no_tag(tiny: config.Config) -> None:
    with pytest.raises(VerifyFailed, match="failed its tests"):
        bake.bake(tiny, ["flunk"])
    assert_nothing_left(tiny, "flunk")


def test_non_idempotent_state_fails_unless_exempt(tiny: config.Config, wb_prefix: str, wb_state: Path,
                                                  tiny_checkout: Path) -> None:
    with pytest.raises(BakeFailed, match="not idempotent") as failure:
        bake.bake(tiny, ["restless"])
    assert "stamp (cmd.run, sls restless)" in str(failure.value)
    assert_nothing_left(tiny, "restless")
    exempt = tiny_config(wb_prefix, wb_state, tiny_checkout, wb_state / "exempt.toml", exempt=["stamp"])
    result = bake.bake(exempt, ["restless"])[0]
    assert _labels(result.tag)["workbench.verify"] == "passed"


def test_keep_failed_keeps_named_leftovers_until_prune(tiny: config.Config) -> None:
    with pytest.raises(BakeFailed):
        bake.bake(tiny, ["broken"], keep_failed=True)
    kept = [c for c in engine.containers({engine.PREFIX_LABEL: tiny.prefix}) if "-failed-broken-" in c.name]
    assert len(kept) == 1 and kept[0].status == "running"
    # A later bake does not take it for an interrupted one.
    assert not [w for w in images.remove_stale(tiny) if "broken" in w]
    pruned = images.prune(tiny, keep=1, released=set(), role="broken")
    assert any("-failed-broken-" in r for r in pruned.removed)
    assert_nothing_left(tiny, "broken")


def record_release(cfg: config.Config, result: bake.BakeResult) -> None:
    """A real release record (engineer C's ledger) pointing at `result`'s image."""
    from workbench.release import ledger

    draft = ledger.Release(
        tag="", role=result.role, environment="sandbox", action="promote", status="released",
        version=result.version, image=result.tag, image_id=result.id, digest="", repository="",
        inputs=result.inputs, verify="passed", replaces=None, rollback_of=None, who="test", at=ledger.now(),
    )
    with ledger.opened(cfg) as book:
        intent = book.begin(draft)
        book.finish(intent, intent.release)


def test_versions_count_up_and_prune_spares_released(tiny: config.Config) -> None:
    first = bake.bake(tiny, ["good"])[0]
    second = bake.bake(tiny, ["good"], force=True)[0]
    third = bake.bake(tiny, ["good"], force=True)[0]
    assert (second.version, third.version) == (first.version + 1, first.version + 2)
    record_release(tiny, first)
    from workbench.release import ledger

    pruned = images.prune(tiny, keep=1, released=ledger.referenced_images(tiny), role="good")
    assert second.tag in pruned.removed and third.tag not in pruned.removed
    assert first.tag in pruned.kept_released
    assert engine.get_image(second.tag) is None
    assert engine.get_image(first.tag) is not None and engine.get_image(third.tag) is not None
    # Pruning never makes a number come back.
    with images.VersionCounter(tiny, "good") as counter:
        assert counter.next() == third.version + 1


def test_stale_leftovers_of_a_killed_bake_are_removed(tiny: config.Config, base_image: Any) -> None:
    client = engine.client()
    dead, alive = "999999999", "1"
    made = []
    for pid in (dead, alive):
        labels = {engine.PREFIX_LABEL: tiny.prefix, images.CANDIDATE_LABEL: "building", images.BAKE_PID_LABEL: pid}
        container = client.containers.create(base_image.tag, ["sleep", "1"], labels=labels,
                                              name=f"{tiny.prefix}-build-stale-{pid}")
        image = container.commit(f"{tiny.prefix}/stale-candidate", pid, changes=[
            f'LABEL "{images.CANDIDATE_LABEL}"="true" "{images.BAKE_PID_LABEL}"="{pid}"'])
        made.append((container, image))
    try:
        removed = images.remove_stale(tiny)
        assert f"container {tiny.prefix}-build-stale-{dead}" in removed
        assert f"image {tiny.prefix}/stale-candidate:{dead}" in removed
        assert not [w for w in removed if w.endswith(alive)]
    finally:
        for container, image in made:
            engine.remove_container(container)
            engine.remove_image(image.id)


@pytest.fixture()
def cache_log(wb_state: Path) -> Iterator[Path]:
    yield wb_state / "aptcache" / "log" / "apt-cacher.log"


def test_warm_cache_bakes_with_the_mirror_unreachable(tiny: config.Config, wb_prefix: str, wb_state: Path,
                                                      tiny_checkout: Path, cache_log: Path) -> None:
    warm = bake.bake(tiny, ["pkgrole"], force=True)[0]
    # apt-cacher-ng's log: `time|I|bytes|client|path` is fetched from the mirror,
    # `time|O|bytes|client|path` is sent to a client.
    served = [line for line in cache_log.read_text().splitlines() if "|O|" in line]
    assert any("/hello_" in line for line in served), "the first bake did not go through the cache"
    # Port 9 on loopback: nothing listens, the mirror is gone.
    dark = tiny_config(wb_prefix, wb_state, tiny_checkout, wb_state / "dark.toml", upstream="http://127.0.0.1:9/debian")
    before = len(cache_log.read_text().splitlines())
    cold = bake.bake(dark, ["pkgrole"], force=True)[0]
    assert cold.version == warm.version + 1
    after = cache_log.read_text().splitlines()[before:]
    assert any("/hello_" in line and "|O|" in line for line in after), "the package was not served by the cache"
    assert not [line for line in after if "|I|" in line], "the cache fetched from the mirror again"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_bake_killed_outright_is_cleaned_up_by_the_next(tiny: config.Config) -> None:
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/fab"), "image.bake", "good", "--force"],
        env={**os.environ, config.ENV_CONFIG: str(tiny.path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not [c for c in engine.containers({engine.PREFIX_LABEL: tiny.prefix}) if "-build-good-" in c.name]:
            assert proc.poll() is None and time.monotonic() < deadline, "the bake never started its build container"
            time.sleep(0.5)
    finally:
        # kill -9 the bake and Packer (its own process group): nobody cleans up,
        # and the package cache the bake started is left running.
        packers = [p for p in _children(proc.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "packer"]
        for pid in [*packers, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait()
    left = [c.name for c in engine.containers({engine.PREFIX_LABEL: tiny.prefix}) if "-build-good-" in c.name]
    assert left, "the killed bake left nothing to clean up (killed too late?)"
    result = bake.bake(tiny, ["good"], force=True)[0]
    assert not [c for c in engine.containers({engine.PREFIX_LABEL: tiny.prefix}) if c.name in left]
    conf_dir = str(tiny.state_dir / "aptcache" / "conf")
    caches = [p for p in Path("/proc").glob("[0-9]*") if conf_dir in _cmdline(p)]
    assert not caches, "the orphaned package cache is still running"
    assert not engine.images({engine.PREFIX_LABEL: tiny.prefix, images.CANDIDATE_LABEL: "true"})
    assert _labels(result.tag)["workbench.verify"] == "passed"


# --- the build host's CAs: lent to the build, never baked in ------------------------------

# Run by the catrust state: an HTTPS server on loopback with the certificate the throwaway CA
# signed, and a fetch from it with Python's default context, which verifies the chain.
CA_CHECK = """\
import http.server, ssl, threading, urllib.request
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/etc/catrust/leaf.crt", "/etc/catrust/leaf.key")
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
server.socket = context.wrap_socket(server.socket, server_side=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
urllib.request.urlopen(f"https://127.0.0.1:{server.server_port}/", timeout=10).read()
with open("/etc/catrust/verified", "w") as out:
    out.write("verified\\n")
"""


def openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture()
def throwaway_ca(tmp_path: Path, tiny_checkout: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CA made for this test and, through WORKBENCH_HOST_CA_DIR, the only host CA a bake
    sees; the catrust role's files get a server certificate it signed."""
    host_cas = tmp_path / "host-cas"
    host_cas.mkdir()
    ca_crt, ca_key = host_cas / "wbtest-throwaway.crt", tmp_path / "ca.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
            "-subj", f"/CN=workbench throwaway test CA {secrets.token_hex(4)}")
    files = tiny_checkout / "salt" / "catrust" / "files"
    files.mkdir(exist_ok=True)
    (files / "check.py").write_text(CA_CHECK)
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", files / "leaf.key", "-out", tmp_path / "leaf.csr",
            "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", tmp_path / "leaf.csr", "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
            "-CAserial", tmp_path / "ca.srl", "-out", files / "leaf.crt", "-days", "2",
            "-extfile", tmp_path / "san.cnf")
    monkeypatch.setenv(ca.ENV_HOST_CA_DIR, str(host_cas))
    return ca_crt


def test_the_host_ca_is_lent_to_the_build_and_never_baked_in(tiny: config.Config, throwaway_ca: Path) -> None:
    assert ca.host_cas() == [throwaway_ca]
    # Usable during the build: the state's fetch over TLS succeeded (else the bake fails),
    # and the role's tests found its record, and a fresh container that no longer trusts it.
    result = bake.bake(tiny, ["catrust"], force=True)[0]
    assert result.tests.startswith("2 passed"), result.tests
    # Never baked in: no file of the image holds a line of it, no link names it.
    line = throwaway_ca.read_text().splitlines()[5]
    script = (
        f"grep -rlF '{line}' /etc /usr /var /root /srv /opt; "
        "ls /usr/local/share/ca-certificates; find /etc/ssl/certs -lname '*workbench-build*'; echo done"
    )
    out = engine.client().containers.run(result.tag, ["sh", "-c", script], entrypoint=[], remove=True).decode()
    assert out.split() == ["done"], f"the lent CA is in {result.tag}:\n{out}"


# --- what a person sees of a failed bake -------------------------------------------------


def test_failed_state_is_shown_in_full_with_the_log(tiny: config.Config) -> None:
    proc = fab("image.bake", "broken", "--progress", "plain", config=tiny.path)
    assert proc.returncode == 1
    # The failing state with its comment, and where the whole output is.
    assert "frobnicate (pkg.installed, sls broken)" in proc.stderr
    assert "frobnicate-does-not-exist" in proc.stderr
    log = re.search(r"the whole output: (\S+) \(fab log (\S+)\)", proc.stderr)
    assert log, proc.stderr
    text = (REPO / log[1]).read_text() if not log[1].startswith("/") else Path(log[1]).read_text()
    # Salt's own log went to the file, not to the terminal.
    assert "Running state [frobnicate-does-not-exist]" in text and "Running state [" not in proc.stderr
    assert text.splitlines()[-1].startswith("# finished: exit 1 after ")
    assert proc.stdout == ""


def test_failed_test_is_shown_with_its_assertion(tiny: config.Config) -> None:
    proc = fab("image.bake", "flunk", "--json", config=tiny.path)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 1 and Path(data["log"]).is_file()
    for shown in (data["error"], proc.stderr):
        assert "failing tests:" in shown
        assert "test_content" in shown and "AssertionError" in shown and "'expected'" in shown
    assert "PASSED" not in proc.stderr and "FAILED" in Path(data["log"]).read_text()
