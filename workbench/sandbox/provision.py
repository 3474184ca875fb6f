"""What a sandbox's provision runs inside: the minion configuration, the script, its output.

The script applies the states exactly as a bake's provision does (Salt's thin
bundle, `salt.salt_call_args`, `salt.minion_config`), with the live salt/ share
as the state tree and `workbench_environment=sandbox`; its output is Salt's
log, then a mark, then salt-call's JSON, which `salt.parse_state_run` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.build import salt, streams
from workbench.core import progress
from workbench.core.config import Config, Role
from workbench.sandbox import image as sandbox_image

GUEST = "/srv/workbench"
RESULT_MARK = "@@workbench-salt-result@@"
RESTART_MARK = "@@workbench-restart@@"


def control_files(
    config: Config, role: Role, fqdn: str, states: list[str], thin: Path, apt_proxy: str = ""
) -> dict[str, str]:
    """`minion` and `provision.sh`, shared with the sandbox at /srv/workbench/ctl.

    With `apt_proxy` (the package cache, as a bake's build container reaches
    it), apt fetches through it while the states apply, and goes direct again
    after: the cache runs only as long as the command that started it.
    """
    minion = salt.minion_config(GUEST, role, role.formulas)
    # The same configuration as a bake's, but the states are the live share.
    minion["file_roots"]["base"][0] = config.sandbox.salt_dir
    minion["pillar_roots"] = {"base": [f"{config.sandbox.salt_dir}/pillar"]}
    minion["grains"] = {"workbench_role": role.name, "workbench_environment": "sandbox"}
    minion["id"] = fqdn
    args = " ".join(_sh_quote(a) for a in salt.salt_call_args(GUEST, states))
    script = PROVISION_SCRIPT.format(
        guest=GUEST, digest=f"{thin.stat().st_size}-{int(thin.stat().st_mtime)}", args=args,
        result_mark=RESULT_MARK, restart_mark=RESTART_MARK, marker=sandbox_image.MARKER,
        unit=VM_UNIT, command=" ".join(role.command), role=role.name, apt_proxy=apt_proxy,
    )
    return {"minion": json.dumps(minion, indent=2) + "\n", "provision.sh": script}


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class SaltWatcher:
    """Reads provision.sh's output: Salt's log lines, then a mark, then the JSON result.

    Every line goes to the run's log; the state being applied (`[INFO    ]
    Running state [nginx] at time ...`) is the live line's activity; warnings
    and errors, and whatever comes before Salt's log, are kept as details. The
    JSON after the mark is kept for the parser.
    """

    def __init__(self) -> None:
        self.in_result = False
        self.restart = False
        self.json_lines: list[str] = []
        self.showing = False
        self.seen_log = False
        self.salt = streams.SaltProgress()

    def feed(self, line: str) -> None:
        if line in (RESULT_MARK, RESTART_MARK):
            self.in_result = self.in_result or line == RESULT_MARK
            self.restart = self.restart or line == RESTART_MARK
            return
        if self.in_result:
            self.json_lines.append(line)
            return
        progress.output(line)
        activity = self.salt.read(line)
        if activity:
            progress.activity(activity)
        elif line.startswith("["):
            # A log line; what follows it, up to the next one, belongs to it.
            self.showing = line.startswith(("[WARNING", "[ERROR", "[CRITICAL"))
            if self.showing:
                progress.detail(line)
        elif self.showing or not self.seen_log:
            progress.detail(line)
        self.seen_log = self.seen_log or line.startswith("[")

    def result(self) -> object:
        text = "\n".join(self.json_lines).strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return {"local": [f"salt-call's result is not JSON: {text[:300]}"]}


PROVISION_SCRIPT = """#!/bin/sh
# Written by the workbench: apply the role's states as a bake does, in a sandbox.
set -u
W={guest}
if [ "$(cat $W/thin/.digest 2>/dev/null)" != "{digest}" ]; then
    rm -rf $W/thin && mkdir -p $W/thin && tar -xzf $W/thin-src/thin.tgz -C $W/thin || exit 1
    echo "{digest}" >$W/thin/.digest
fi
mkdir -p $W/conf $W/out
cp $W/ctl/minion $W/conf/minion
rm -f $W/out/result.json
proxy_conf=/etc/apt/apt.conf.d/01workbench-proxy
rm -f $proxy_conf
if [ -n "{apt_proxy}" ]; then
    printf 'Acquire::http::Proxy "%s";\\n' "{apt_proxy}" >$proxy_conf
    trap 'rm -f $proxy_conf' EXIT
fi
rc=0
python3 $W/thin/salt-call --log-level=info --out-file=$W/out/result.json {args} 2>&1 || rc=$?
echo "{result_mark}"
cat $W/out/result.json 2>/dev/null
echo
[ "$rc" -eq 0 ] || exit "$rc"
if [ "$(cat /proc/1/comm)" = systemd ]; then
    # A VM sandbox: systemd runs the role's command, as a container runs its image command.
    unit=/etc/systemd/system/{unit}.service
    if [ -e $unit ]; then
        echo "{restart_mark}"
    else
        cat >$unit <<UNIT
[Service]
ExecStart={command}
Environment=WORKBENCH_ROLE={role} WORKBENCH_ENVIRONMENT=sandbox WORKBENCH_RELEASE=sandbox
[Install]
WantedBy=multi-user.target
UNIT
        systemctl daemon-reload && systemctl enable --now {unit}
    fi
elif [ -e {marker} ]; then
    echo "{restart_mark}"
else
    touch {marker}
fi
"""

# The systemd unit that runs the role's command in a VM sandbox.
VM_UNIT = "workbench-sandbox"
