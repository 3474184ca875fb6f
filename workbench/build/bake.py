"""Baking role images: base -> provision (Packer + masterless Salt) -> verify -> commit -> tag.

Salt runs from a shell provisioner (images/scripts/provision.sh) calling the
thin bundle's salt-call, not through Packer's salt-masterless provisioner:
salt-masterless 1.6.6 fixes salt-call's command line itself, prints the
result in Salt's human format only and uploads the state tree with the
builder's slow directory copy; our own call gets `--out=json
--retcode-passthrough`, a second (idempotence) run and one bundle upload, and
Packer fetches the JSON results for `workbench.salt` to parse.

Inputs hash (content address of a role image): the files that define the role
(`workbench.build.rolefiles`: its states and their include closure, the pillar,
its formulas, images/, its tests with their conftest.py and the modules they
import; `fab watch` decides what a commit changed from the same files), the
base image id, the builder type, the applied state list, command and ports,
and the Salt version.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shlex
import shutil
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbench.build import aptcache, base, images, packer, rolefiles, salt, streams
from workbench.build.builders import Builder, BuildRequest, builder_for
from workbench.build.ca import copy_into
from workbench.core import engine, progress, run
from workbench.core.config import Config, Role
from workbench.core.errors import BakeFailed, CommandFailed, VerifyFailed, WorkbenchError
from workbench.core.inputs import hash_inputs

# Bump when the way roles are baked changes, so that old images are not reused.
RECIPE_VERSION = 1
BUILD_DIR = "/var/tmp/workbench-build"
TEMPLATE = "images/role.json"
PROVISION_SCRIPT = "images/scripts/provision.sh"


@dataclass(frozen=True)
class BakeResult:
    role: str
    tag: str
    id: str
    version: int
    inputs: str
    size: int
    seconds: float
    cached: bool
    tests: str
    # Seconds per step of a real bake: provision (Packer: both Salt runs and the commit), verify.
    phases: tuple[tuple[str, float], ...] = ()

    def summary(self) -> str:
        how = "cache hit, reused" if self.cached else "baked and verified"
        split = "".join(f", {name} {seconds:.1f}s" for name, seconds in self.phases)
        return (
            f"{self.role}: {self.tag} ({how}) id {self.id[7:19]}, {progress.human_size(self.size)}, "
            f"{self.seconds:.1f}s{split}, inputs {self.inputs[:12]}, tests: {self.tests}"
        )

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "phases": dict(self.phases)}


# --- inputs ------------------------------------------------------------------------


def role_inputs(config: Config, role: Role, base_ref: str) -> dict[str, Any]:
    """What a role image is made from: the files that define the role, and what is not a file."""
    return {
        "recipe": RECIPE_VERSION,
        "base": base_ref,
        "files": rolefiles.files_digest(config, role),
        "builder": config.builder.type,
        "applied": salt.state_list(config, role),
        "command": list(role.command),
        "ports": list(role.ports),
        "salt": salt.version(),
    }


def definition(config: Config, role: Role) -> str:
    """The role's definition whatever the builder: a container image and a qcow2 disk of the
    same role files, states, command and base settings share it (their inputs hashes differ).
    A release on a kvm/qemu cloud boots the qcow2 of its container image's definition."""
    return _definition(config, role_inputs(config, role, ""))


def _definition(config: Config, inputs: dict[str, Any]) -> str:
    """`definition` from a bake's own inputs: the builder dropped, the base named by its settings."""
    kept = {key: value for key, value in inputs.items() if key != "builder"}
    kept["base"] = hash_inputs(base.base_inputs(config))
    return hash_inputs(kept)


# --- entry point -----------------------------------------------------------------------


def bake(
    config: Config, roles: Sequence[str], *, force: bool = False, keep_failed: bool = False, builder_type: str = ""
) -> list[BakeResult]:
    """Bake `roles` (in parallel up to `[builder] parallel`), sharing one base and one cache.

    `builder_type` (`docker`, `qemu`) overrides `[builder] type` for this bake.
    Every role is attempted; if any fails, BakeFailed lists them all after the
    others have finished.
    """
    if builder_type:
        config = config.with_builder(builder_type)
    wanted = [config.role(name) for name in dict.fromkeys(roles)]
    if not wanted:
        raise BakeFailed(f"no roles to bake: {config.path} defines none")
    builder = builder_for(config)
    start = time.monotonic()
    found = base.find_base(config)
    base_ref = builder.base_ref(config, found.id) if found is not None else None
    if base_ref is not None and not force:
        cached = [_cached(config, builder, role, base_ref, start) for role in wanted]
        if all(cached):
            return [c for c in cached if c is not None]
    with aptcache.package_cache(config) as cache:
        mirror_via = cache.mirror_via(config.base.mirror) if cache else None
        base_image = base.build_base(config, mirror_via=mirror_via)
        base_ref = builder.prepare(config, base_image, mirror_via)
        stale = images.remove_stale(config)
        for what in stale:
            progress.detail(f"removed the leftover of an interrupted bake: {what}")
        thin = salt.thin_bundle(config)
        job = _Job(config, builder, base_ref, thin, cache, force, keep_failed)
        if len(wanted) == 1:
            return [job.bake(wanted[0])]
        return _bake_parallel(config, job, wanted)


def bake_role(config: Config, role: str, *, force: bool = False, keep_failed: bool = False) -> BakeResult:
    """Bake one role: `bake_role(config, "app").tag == "workbench/app:7"`."""
    return bake(config, [role], force=force, keep_failed=keep_failed)[0]


def _bake_parallel(config: Config, job: _Job, roles: list[Role]) -> list[BakeResult]:
    workers = min(len(roles), config.builder.parallel or os.cpu_count() or 1)
    progress.step("bake", f"baking {', '.join(r.name for r in roles)} ({workers} at a time)")
    results: list[BakeResult] = []
    failures: list[str] = []
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {role.name: pool.submit(job.bake, role) for role in roles}
    try:
        for name, future in futures.items():
            try:
                results.append(future.result())
            except WorkbenchError as exc:
                failures.append(f"{name}: {exc}")
    except KeyboardInterrupt:
        # Only this thread hears Ctrl-C: pass it on so each Packer cleans up, and
        # start no more bakes; the workers then fail without tagging anything.
        pool.shutdown(wait=False, cancel_futures=True)
        run.interrupt_streams()
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    if failures:
        done = ", ".join(r.tag for r in results) or "none"
        raise BakeFailed(f"{len(failures)} of {len(roles)} bakes failed (done: {done}):\n" + "\n".join(failures))
    return results


def _cached(config: Config, builder: Builder, role: Role, base_ref: str, start: float) -> BakeResult | None:
    digest = hash_inputs(role_inputs(config, role, base_ref))
    found = builder.cached(config, role, digest)
    if found is None:
        return None
    progress.step(f"bake {role.name}", f"{found.tag} is up to date (inputs {digest[:12]}): nothing to bake")
    return BakeResult(
        role=role.name,
        tag=found.tag,
        id=found.id,
        version=found.version,
        inputs=digest,
        size=found.size,
        seconds=time.monotonic() - start,
        cached=True,
        tests=found.tests,
    )


# --- one bake -----------------------------------------------------------------------


@dataclass
class _Job:
    config: Config
    builder: Builder
    base_ref: str
    thin: Path
    cache: aptcache.PackageCache | None
    force: bool
    keep_failed: bool

    def bake(self, role: Role) -> BakeResult:
        scope = f"bake {role.name}"
        with progress.job(scope):
            start = time.monotonic()
            if not self.force:
                cached = _cached(self.config, self.builder, role, self.base_ref, start)
                if cached:
                    return cached
            bake_id = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
            work = self.config.state_dir / "bakes" / f"{role.name}-{bake_id}"
            try:
                return self._bake(role, scope, bake_id, work, start)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _bake(self, role: Role, scope: str, bake_id: str, work: Path, start: float) -> BakeResult:
        config = self.config
        inputs = role_inputs(config, role, self.base_ref)
        digest = hash_inputs(inputs)
        states = salt.state_list(config, role)
        labels = _candidate_labels(config, role, digest, _definition(config, inputs), self.base_ref, bake_id)
        request = BuildRequest(
            config=config,
            role=role,
            bake_id=bake_id,
            base_ref=self.base_ref,
            labels=labels,
            container_name=f"{config.prefix}-build-{role.name}-{bake_id}",
            work=work,
        )
        progress.step(
            scope,
            f"provision: {', '.join(states)} with Salt {labels['workbench.salt']} "
            f"(packer {self.builder.name} builder, inputs {digest[:12]})",
        )
        bundle = _make_bundle(config, role, work, self.thin, states)
        template = _render_template(config, self.builder, request, work)
        results = work / "results"
        results.mkdir(parents=True, exist_ok=True)
        variables = {
            **self.builder.variables(config, request),
            "bundle": str(bundle),
            "results_dir": str(results),
            "states": ",".join(states),
            "salt_args": " ".join(salt.salt_call_args(BUILD_DIR, states)),
            "apt_proxy": self.builder.apt_proxy(self.cache),
            "build_dir": BUILD_DIR,
            "provision_script": str(config.root / PROVISION_SCRIPT),
            "role_command": shlex.join(role.command),
        }
        on_error = self.builder.on_error(self.keep_failed)
        provision_start = time.monotonic()
        salt_log = streams.SaltProgress()
        log, failure = packer.build(
            template, variables=variables, only=self.builder.name, on_error=on_error, on_ui=salt_log.feed
        )
        provision_seconds = time.monotonic() - provision_start
        runs = _read_results(results / "results.json")
        if failure is not None:
            if self.keep_failed:
                self.builder.keep_build(request)
            raise BakeFailed(_provision_failure(role, runs, failure))
        candidate = self.builder.candidate(log, request)
        try:
            self._check_idempotent(role, runs)
            progress.step(scope, f"verify: {role.tests_path} against {self.builder.describe(candidate)}")
            tests = streams.PytestProgress()
            try:
                verdict = self.builder.verify(candidate, request, tests.feed)
            except VerifyFailed as exc:
                failing = tests.describe_failures()
                raise VerifyFailed(f"{exc}\n  failing tests:\n{failing}" if failing else str(exc)) from None
            phases = (("provision", provision_seconds), ("verify", verdict.seconds))
            progress.step(scope, f"commit: tests {verdict.summary}")
            accepted = self._accept(request, candidate, digest, verdict.summary, start)
            result = dataclasses.replace(accepted, phases=phases)
        except (BakeFailed, VerifyFailed):
            self.builder.discard(candidate, request, keep=self.keep_failed)
            raise
        except BaseException:
            # Ctrl-C or a crash: no tag was moved; the candidate goes.
            self.builder.discard(candidate, request, keep=False)
            raise
        return result

    def _check_idempotent(self, role: Role, runs: tuple[salt.StateRun | None, salt.StateRun | None]) -> None:
        second = runs[1]
        if second is None:
            raise BakeFailed(f"{role.name}: the second (idempotence) Salt run left no result")
        changed = second.changed(role.idempotence_exempt)
        if changed:
            names = "\n".join(f"  - {s.id} ({s.function}, sls {s.sls})" for s in changed)
            raise BakeFailed(
                f"{role.name}: not idempotent: {len(changed)} state(s) changed again on the second run:\n{names}\n"
                f"  fix the states, or list their IDs in [roles.{role.name}] idempotence_exempt"
            )

    def _accept(self, request: BuildRequest, candidate: str, digest: str, tests: str, start: float) -> BakeResult:
        verdict = {
            images.VERIFY_LABEL: "passed",
            "workbench.tests": tests,
            images.CANDIDATE_LABEL: "false",
        }
        accepted = self.builder.accept(candidate, request, verdict)
        return BakeResult(
            role=request.role.name,
            tag=accepted.tag,
            id=accepted.id,
            version=accepted.version,
            inputs=digest,
            size=accepted.size,
            seconds=time.monotonic() - start,
            cached=False,
            tests=tests,
        )


def _candidate_labels(
    config: Config, role: Role, digest: str, definition: str, base_id: str, bake_id: str
) -> dict[str, str]:
    commit, dirty = _git_state(config.root)
    return {
        engine.PREFIX_LABEL: config.prefix,
        engine.ROLE_LABEL: role.name,
        engine.INPUTS_LABEL: digest,
        images.DEFINITION_LABEL: definition,
        "workbench.base": base_id,
        "workbench.git.commit": commit,
        "workbench.git.dirty": "true" if dirty else "false",
        "workbench.built": datetime.now(UTC).isoformat(timespec="seconds"),
        "workbench.salt": salt.version(),
        images.CANDIDATE_LABEL: "true",
        images.VERIFY_LABEL: "pending",
        images.BAKE_LABEL: bake_id,
        images.BAKE_PID_LABEL: str(os.getpid()),
    }


def _git_state(root: Path) -> tuple[str, bool]:
    try:
        commit = run.capture(["git", "-C", str(root), "rev-parse", "HEAD"]).stdout.strip()
        status = run.capture(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]).stdout
    except (CommandFailed, WorkbenchError):
        return "unknown", True
    return commit, bool(status.strip())


def _make_bundle(config: Config, role: Role, work: Path, thin: Path, states: Sequence[str]) -> Path:
    """One tarball with everything the build machine needs; unpacked under BUILD_DIR."""
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "bundle.tar"
    salt_root = config.root / "salt"
    formula_roots = [f"formulas/{i}" for i in range(len(role.formulas))]
    conf = work / "minion"
    conf.write_text(json.dumps(salt.minion_config(BUILD_DIR, role, formula_roots), indent=2))
    ca_dir = work / "ca"
    copy_into(ca_dir)

    def no_pillar(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name == "states/pillar" or info.name.startswith("states/pillar/") else info

    with tarfile.open(bundle, "w") as tar:
        tar.add(thin, arcname="thin.tgz")
        tar.add(conf, arcname="conf/minion")
        tar.add(salt_root, arcname="states", filter=no_pillar)
        if (salt_root / "pillar").is_dir():
            tar.add(salt_root / "pillar", arcname="pillar")
        else:
            tar.addfile(_dir_info("pillar"))
        for arcname, formula in zip(formula_roots, role.formulas, strict=True):
            tar.add(config.root / formula, arcname=arcname)
        tar.add(ca_dir, arcname="ca")
    return bundle


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _render_template(config: Config, builder: Builder, request: BuildRequest, work: Path) -> Path:
    source = config.root / TEMPLATE
    try:
        template = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise BakeFailed(f"cannot read the Packer template {source}: {exc}") from None
    rendered = work / "template.json"
    rendered.write_text(json.dumps(builder.configure(template, request), indent=2))
    return rendered


def _read_results(path: Path) -> tuple[salt.StateRun | None, salt.StateRun | None]:
    """The two Salt runs' results as Packer fetched them (None where there is none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    first = salt.parse_state_run(data.get("run1"))
    second = salt.parse_state_run(data.get("run2")) if data.get("rc2", -1) != -1 else None
    return first, second


def _provision_failure(
    role: Role, runs: tuple[salt.StateRun | None, salt.StateRun | None], failure: CommandFailed
) -> str:
    first, second = runs
    for label, result in (("Salt", first), ("the second Salt run", second)):
        if result is not None and not result.ok:
            what = "could not compile the states" if result.errors else f"{len(result.failed)} state(s) failed"
            said = f"{role.name}: {label} {what}; no image was committed:\n{salt.describe_failure(result)}"
            if salt.NO_RESULT in result.errors and failure.tail:
                # Salt itself died: what it last printed says why.
                said += "\n  last lines of the build:\n" + "\n".join(f"  | {line}" for line in failure.tail)
            return said
    return f"{role.name}: the Packer build failed; no image was committed: {failure}"
