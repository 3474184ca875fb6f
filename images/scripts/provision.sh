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
FENCE="$BUILD/fence"
LSB_HOOK=/lib/lsb/init-functions.d/01-workbench-bake
SSD=/sbin/start-stop-daemon

salt_call() {
    # The thin bundle carries Salt and its Python dependencies; nothing is installed.
    # WB_SALT_ARGS (workbench.salt.salt_call_args) holds no spaces within an argument.
    # The fence's `service` and `systemctl` (fence_daemons) come first on the PATH
    # of Salt and of what it runs.
    # shellcheck disable=SC2086
    PATH="$FENCE:$PATH" PYTHONWARNINGS=ignore::DeprecationWarning python3 "$BUILD/thin/salt-call" $WB_SALT_ARGS "$@"
}

service_providers() {
    # Service states record what the image runs (/etc/workbench/services.json)
    # and start nothing: salt/_modules/workbench_service.py is Salt's `service`
    # module here, in both builders, so they mean the same in a container and
    # in a VM. A container also refuses kernel parameters and modules, by name.
    if [ ! -f "$BUILD/states/_modules/workbench_service.py" ]; then
        echo "workbench: no salt/_modules/workbench_service.py in this checkout: service states use Salt's own module"
        return
    fi
    mkdir -p "$BUILD/conf/minion.d"
    {
        echo "module_dirs: [$BUILD/states]"
        echo "providers:"
        echo "  service: workbench_service"
        if [ "${WB_BUILDER:-}" = docker ]; then
            echo "  sysctl: workbench_sysctl"
            echo "  kmod: workbench_kmod"
        fi
    } >"$BUILD/conf/minion.d/workbench.conf"
}

fence_daemons() {
    # No daemon runs during the bake, whatever a state calls (services start
    # when the image runs). policy-rc.d covers invoke-rc.d and deb-systemd-invoke;
    # these cover the rest, each printing what it did not do:
    # - init scripts, however called (directly, by `service`): Debian's
    #   init-functions source this hook, which ends the script for start actions;
    # - start-stop-daemon --start (init scripts, some postinsts): diverted to a
    #   stand-in that does nothing, as debootstrap does;
    # - `service` and `systemctl` on Salt's PATH: start actions do nothing.
    cat >"$LSB_HOOK" <<'HOOK'
# workbench: no daemon starts during a bake (images/scripts/provision.sh removes this file).
if [ "$0" = /lib/init/init-d-script ]; then _wb_action=${2:-}; else _wb_action=${1:-}; fi
case "$0" in
/etc/init.d/* | /lib/init/init-d-script)
    case "$_wb_action" in
    start | restart | reload | force-reload | try-restart | condrestart)
        echo "workbench: not running $0 $_wb_action during the bake: services start when the image runs" >&2
        exit 0 ;;
    esac ;;
esac
HOOK
    # Diverted, so that a dpkg upgraded during the bake installs the real one aside too.
    dpkg-divert --quiet --local --no-rename --divert "$SSD.REAL" --add "$SSD"
    cp -p "$SSD" "$SSD.REAL"
    cat >"$SSD.fence" <<'SSD'
#!/bin/sh
# workbench: start-stop-daemon --start does nothing during a bake (images/scripts/provision.sh).
for arg; do
    case "$arg" in
    --) break ;;
    -S | --start)
        echo "workbench: not starting a daemon during the bake: start-stop-daemon $*" >&2
        exit 0 ;;
    esac
done
exec /sbin/start-stop-daemon.REAL "$@"
SSD
    chmod 755 "$SSD.fence"
    mv -f "$SSD.fence" "$SSD"
    mkdir -p "$FENCE"
    cat >"$FENCE/systemctl" <<'SYSTEMCTL'
#!/bin/sh
# workbench: systemctl for Salt during a bake: nothing starts, stops or reloads.
verb=
for arg; do case "$arg" in -*) ;; *) verb=$arg; break ;; esac; done
case "$verb" in
start | restart | try-restart | reload | reload-or-restart | try-reload-or-restart | condrestart | stop | kill | \
    daemon-reload | daemon-reexec | reset-failed | isolate)
    echo "workbench: not running systemctl $* during the bake: services start when the image runs" >&2
    exit 0 ;;
is-active | status) exit 3 ;;
esac
real=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v systemctl || true)
if [ -n "$real" ]; then exec "$real" "$@"; fi
echo "workbench: no systemd in this image: systemctl $* did nothing" >&2
SYSTEMCTL
    cat >"$FENCE/service" <<'SERVICE'
#!/bin/sh
# workbench: `service` for Salt during a bake: nothing starts or reloads.
case "${2:-}" in
start | restart | reload | force-reload | try-restart | condrestart)
    echo "workbench: not running service $* during the bake: services start when the image runs" >&2
    exit 0 ;;
esac
exec /usr/sbin/service "$@"
SERVICE
    chmod 755 "$FENCE/systemctl" "$FENCE/service"
}

unfence_daemons() {
    rm -f "$LSB_HOOK"
    mv -f "$SSD.REAL" "$SSD"
    dpkg-divert --quiet --local --no-rename --remove "$SSD"
}

apply() {
    mkdir -p "$BUILD/thin" "$BUILD/out"
    tar -xf "$BUNDLE" -C "$BUILD"
    rm -f "$BUNDLE"
    tar -xzf "$BUILD/thin.tgz" -C "$BUILD/thin"
    # Package scripts must not start services in the image: they start when it runs.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    fence_daemons
    service_providers
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
    unfence_daemons
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
    # Every service the states declared (salt/_modules/workbench_service.py):
    # monit runs those that run (workbench-services), systemd none of them.
    recorded=$(python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["services"]))' \
        /etc/workbench/services.json 2>/dev/null || true)
    for name in monit $checked $recorded; do
        case "$name" in ssh | sshd) continue ;; esac
        if systemctl is-enabled --quiet "$name.service" 2>/dev/null; then
            systemctl disable --quiet "$name.service"
            echo "workbench: disabled $name.service: the image's command (workbench-image.service) runs the services"
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
