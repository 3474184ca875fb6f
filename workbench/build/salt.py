"""Masterless Salt for bakes: the thin bundle, the salt-call arguments, the result parser.

Salt reaches the build machine as Salt's own thin bundle (Salt and its pure
Python dependencies in one tarball, made here on the host by
`salt.utils.thin.gen_thin`), so nothing is installed in the image and nothing
is fetched from the internet. Inside, `python3 thin/salt-call --local` runs
with a minion configuration whose every path is under the build directory, so
removing that directory removes every trace of Salt.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core import files
from workbench.core.config import Config, Role


def version() -> str:
    import salt.version

    return str(salt.version.__version__)


def thin_bundle(config: Config) -> Path:
    """The thin tarball for the installed Salt, made once per Salt version (about 5 s)."""
    root = config.state_dir / "salt-thin" / version()
    tarball = root / "thin" / "thin.tgz"
    if tarball.is_file():
        return tarball
    root.mkdir(parents=True, exist_ok=True)
    # Parallel bakes (`--all`) share one bundle: the first makes it.
    with files.locked(root / ".lock"):
        if not tarball.is_file():
            import salt.utils.thin

            made = Path(salt.utils.thin.gen_thin(str(root)))
            if made != tarball:
                shutil.copyfile(made, tarball)
    return tarball


def state_list(config: Config, role: Role) -> list[str]:
    """The common states, then the role's, each once: ['base', 'app']."""
    seen: dict[str, None] = {}
    for name in (*config.workbench.common_states, *role.state_list):
        seen.setdefault(name, None)
    return list(seen)


def minion_config(build_dir: str, role: Role, formula_roots: Sequence[str]) -> dict[str, Any]:
    """A minion configuration that keeps Salt's files under `build_dir`.

    `root_dir` moves the pki, cache, socket and log directories under it; the
    state tree, the formulas and the pillar are unpacked there too.
    """
    return {
        "file_client": "local",
        "root_dir": f"{build_dir}/root",
        "id": f"{role.name}.build",
        "file_roots": {"base": [f"{build_dir}/states", *(f"{build_dir}/{f}" for f in formula_roots)]},
        "pillar_roots": {"base": [f"{build_dir}/pillar"]},
        "grains": {"workbench_role": role.name, "workbench_environment": "build"},
    }


def salt_call_args(build_dir: str, states: Sequence[str]) -> list[str]:
    """salt-call's arguments (after the program), minus log level and output file.

    `--retcode-passthrough` makes a failed state a non-zero exit; `--out=json`
    makes the result parseable whatever Salt prints besides.
    """
    return [
        f"--config-dir={build_dir}/conf",
        "--local",
        "--out=json",
        "--out-indent=-1",
        "--retcode-passthrough",
        "state.sls",
        ",".join(states),
    ]


# --- results -------------------------------------------------------------------


@dataclass(frozen=True)
class StateResult:
    id: str
    sls: str
    function: str
    result: bool | None
    changed: bool
    comment: str


@dataclass(frozen=True)
class StateRun:
    """One `salt-call --out=json state.sls` run, understood."""

    states: tuple[StateResult, ...]
    errors: tuple[str, ...]

    @property
    def failed(self) -> list[StateResult]:
        return [s for s in self.states if s.result is False]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed

    def changed(self, exempt: Iterable[str] = ()) -> list[StateResult]:
        skip = set(exempt)
        return [s for s in self.states if s.changed and s.id not in skip]


NO_RESULT = "salt-call wrote no result (it crashed before running any state)"


def parse_state_run(data: Any) -> StateRun:
    """Read salt-call's JSON for a state run.

    A run that compiled gives `{"local": {"pkg_|-nginx_|-nginx_|-installed":
    {"result": true, "changes": {...}, "comment": ..., "__id__": "nginx",
    "__sls__": "app", "__run_num__": 3}, ...}}`; one that did not (no such sls,
    a render error, a requisite that does not exist) gives `{"local": ["error", ...]}`.
    """
    if data is None:
        return StateRun((), (NO_RESULT,))
    if not isinstance(data, Mapping) or "local" not in data:
        return StateRun((), (f"unexpected salt-call output: {json.dumps(data)[:300]}",))
    body = data["local"]
    if isinstance(body, list):
        return StateRun((), tuple(str(e).strip() for e in body) or ("salt-call reported an empty error list",))
    if isinstance(body, str):
        return StateRun((), (body.strip(),))
    if not isinstance(body, Mapping):
        return StateRun((), (f"unexpected salt-call result: {json.dumps(body)[:300]}",))
    states = []
    for key, value in body.items():
        if not isinstance(value, Mapping):
            return StateRun((), (f"unexpected state result for {key}: {json.dumps(value)[:300]}",))
        parts = key.split("_|-")
        function = f"{parts[0]}.{parts[-1]}" if len(parts) >= 4 else key
        states.append(
            (
                int(value.get("__run_num__", 0)),
                StateResult(
                    id=str(value.get("__id__", parts[1] if len(parts) >= 2 else key)),
                    sls=str(value.get("__sls__", "")),
                    function=function,
                    result=value.get("result"),
                    changed=bool(value.get("changes")),
                    comment=_comment(value.get("comment", "")),
                ),
            )
        )
    return StateRun(tuple(s for _, s in sorted(states, key=lambda pair: pair[0])), ())


def _comment(comment: Any) -> str:
    if isinstance(comment, list):
        return "\n".join(str(c) for c in comment)
    return str(comment)


def describe_failure(run: StateRun) -> str:
    """The lines a user needs: each error, or each failed state with its comment."""
    if run.errors:
        return "\n".join(f"  - {e}" for e in run.errors)
    lines = []
    for state in run.failed:
        comment = state.comment.strip().replace("\n", "\n      ")
        lines.append(f"  - {state.id} ({state.function}, sls {state.sls}): {comment}")
    return "\n".join(lines)
