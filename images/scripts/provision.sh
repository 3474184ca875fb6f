#!/bin/sh
# Runs inside the build machine (container or VM), driven by images/role.json.
# WB_BUILDER is Packer's builder type (docker, qemu).
#   provision.sh apply   unpack the bundle, fence services off, run Salt twice
#   provision.sh finish  fail if Salt failed, then remove every trace of the build
# `apply` always exits 0 once Salt has run, so that Packer fetches the JSON
# results for the workbench to parse; `finish` then fails the build (nothing is
# committed) if the first run failed. The idempotence verdict is the
# workbench's, made from the second run's results.
set -eu
BUILD=${WB_BUILD:?}
BUNDLE=/var/tmp/workbench-bundle.tar
PROXY_CONF=/etc/apt/apt.conf.d/01workbench-proxy
CA_DIR=/usr/local/share/ca-certificates

salt_call() {
    # The thin bundle carries Salt and its Python dependencies; nothing is installed.
    # WB_SALT_ARGS (workbench.salt.salt_call_args) holds no spaces within an argument.
    # shellcheck disable=SC2086
    PYTHONWARNINGS=ignore::DeprecationWarning python3 "$BUILD/thin/salt-call" $WB_SALT_ARGS "$@"
}

apply() {
    mkdir -p "$BUILD/thin" "$BUILD/out"
    tar -xf "$BUNDLE" -C "$BUILD"
    rm -f "$BUNDLE"
    tar -xzf "$BUILD/thin.tgz" -C "$BUILD/thin"
    # Package scripts must not start services in the image: they start when it runs.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    if [ -n "${WB_APT_PROXY:-}" ]; then
        printf 'Acquire::http::Proxy "%s";\n' "$WB_APT_PROXY" >"$PROXY_CONF"
    fi
    # The host's custom CAs (an intercepting proxy's), for the build only.
    for crt in "$BUILD"/ca/*.crt; do
        [ -e "$crt" ] || continue
        mkdir -p "$CA_DIR"
        cp "$crt" "$CA_DIR/workbench-build-$(basename "$crt")"
    done
    if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null; fi
    echo "workbench: applying states $WB_STATES"
    rc1=0
    salt_call --log-level=info --out-file="$BUILD/out/run1.json" || rc1=$?
    rc2=-1
    if [ "$rc1" -eq 0 ]; then
        echo "workbench: applying states $WB_STATES again (idempotence check)"
        rc2=0
        salt_call --log-level=warning --out-file="$BUILD/out/run2.json" || rc2=$?
    fi
    python3 - "$BUILD/out" "$rc1" "$rc2" <<'PY'
import json, os, sys
out, rc1, rc2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    path = os.path.join(out, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"rc1": rc1, "run1": load("run1.json"), "rc2": rc2, "run2": load("run2.json")}, f)
PY
    echo "workbench: salt exit codes: first run $rc1, second run $rc2"
}

finish() {
    status=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["rc1"], r["rc2"])' "$BUILD/out/results.json")
    set -- $status
    if [ "$1" -ne 0 ] || [ "$2" -ne 0 ]; then
        echo "workbench: salt failed (exit codes $1, $2): not committing" >&2
        exit 1
    fi
    rm -f /usr/sbin/policy-rc.d "$PROXY_CONF"
    if ls "$CA_DIR"/workbench-build-* >/dev/null 2>&1; then
        rm -f "$CA_DIR"/workbench-build-*
        # Their links (name and hash) now dangle: removing them is all that
        # `update-ca-certificates --fresh` would change in /etc/ssl/certs, and it
        # relinks every certificate to get there (80 s under qemu's emulation).
        if command -v update-ca-certificates >/dev/null; then
            find /etc/ssl/certs -xtype l -delete
            update-ca-certificates >/dev/null
        fi
    fi
    if [ "${WB_BUILDER:-}" = qemu ]; then machine_finish; fi
    rm -rf "$BUILD" "$BUNDLE" /etc/salt /var/cache/salt /var/log/salt /var/run/salt /run/salt /srv/salt /srv/pillar
    if command -v apt-get >/dev/null; then apt-get clean; fi
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/partial/* /root/.cache
    echo "workbench: build machinery removed"
}

machine_finish() {
    # A VM image: systemd runs the role's command, as a container runs its image
    # command, so monit owns the role's services there too: the units of the
    # services monit checks (and monit's own) are disabled. sshd stays systemd's:
    # it is how the machine is reached.
    cat >/etc/systemd/system/workbench-image.service <<UNIT
[Unit]
Description=The image's command: release record, start hooks, then monit and the role's services
Wants=network-online.target
After=network-online.target

[Service]
Environment=TINI_SUBREAPER=1
ExecStart=${WB_COMMAND:?}
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
    systemctl enable --quiet workbench-image.service
    checked=$(cat /etc/monit/conf.d/* 2>/dev/null | sed -n 's/^check process \([^ ]*\).*/\1/p')
    for name in monit $checked; do
        case "$name" in ssh | sshd) continue ;; esac
        if systemctl is-enabled --quiet "$name.service" 2>/dev/null; then
            systemctl disable --quiet "$name.service"
            echo "workbench: disabled $name.service: monit runs it (workbench-image.service)"
        fi
    done
    # Each machine made from the image makes its own at its first boot.
    rm -f /etc/ssh/ssh_host_*
    : >/etc/machine-id
}

case "${1:-}" in
apply) apply ;;
finish) finish ;;
*) echo "usage: $0 apply|finish" >&2; exit 2 ;;
esac
