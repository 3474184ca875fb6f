"""What a docker sandbox runs: the base image plus sshd and a `vagrant` user.

The image holds no role and no key: states are applied in the running sandbox,
and the public half of a key made under the state directory is mounted as the
`vagrant` user's authorized_keys. Its tag is a hash of the base's tag and this
recipe, so a new base or recipe makes a new image and an unchanged one is reused.
"""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker.errors

from workbench.build import base
from workbench.core import engine, progress, run
from workbench.core.config import Config
from workbench.core.errors import BuildFailed
from workbench.core.inputs import hash_inputs

INIT_PATH = "/usr/local/sbin/workbench-sandbox-init"
MARKER = "/var/lib/workbench-sandbox/provisioned"

# PID 1 of a docker sandbox. sshd first, so `vagrant up` can log in; the
# role's own command (the image command of a bake, monit under workbench-init)
# only once a provision has succeeded, because before that it is not there.
INIT_SCRIPT = f"""#!/bin/sh
# workbench-sandbox-init COMMAND...: PID 1 of a workbench sandbox.
set -u
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
/usr/sbin/sshd -e || exit 1
trap 'exit 0' TERM INT
while [ ! -e {MARKER} ]; do sleep 1 & wait $!; done
if [ $# -gt 0 ] && [ -x "$1" ]; then
    exec "$@"
fi
echo "workbench-sandbox-init: the role command $* is not executable; only sshd runs" >&2
while :; do sleep 3600 & wait $!; done
"""

DOCKERFILE = f"""FROM {{base}}
RUN printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \\
 && apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server sudo \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \\
 && useradd --create-home --shell /bin/bash vagrant \\
 && printf 'vagrant ALL=(ALL) NOPASSWD: ALL\\nDefaults:vagrant !requiretty\\n' >/etc/sudoers.d/vagrant \\
 && chmod 0440 /etc/sudoers.d/vagrant \\
 && install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh \\
 && install -d -m 0755 /var/lib/workbench-sandbox /srv/workbench
COPY workbench-sandbox-init {INIT_PATH}
RUN chmod 0755 {INIT_PATH}
CMD ["{INIT_PATH}"]
"""

# Bump when the recipe above changes in a way its text does not show.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class SandboxImage:
    tag: str
    id: str
    cached: bool
    seconds: float


def image_tag(config: Config, base_tag: str) -> str:
    digest = hash_inputs({"base": base_tag, "dockerfile": DOCKERFILE, "init": INIT_SCRIPT, "v": RECIPE_VERSION})
    return f"{config.prefix}/sandbox:{digest[:12]}"


def ensure_image(config: Config) -> SandboxImage:
    """The sandbox image for the current base, built (about 20 s) if missing."""
    start = time.monotonic()
    base_image = base.build_base(config)
    tag = image_tag(config, base_image.tag)
    found = engine.get_image(tag)
    if found is not None:
        return SandboxImage(tag, found.id, True, time.monotonic() - start)
    progress.step("sandbox", f"building the sandbox image {tag} (base + openssh-server, sudo, a vagrant user)")
    labels = {engine.PREFIX_LABEL: config.prefix, engine.ROLE_LABEL: "sandbox", "workbench.base": base_image.tag}
    context = _context(DOCKERFILE.format(base=base_image.tag))
    api = engine.client().api
    try:
        for chunk in api.build(fileobj=context, custom_context=True, tag=tag, labels=labels, rm=True,
                               forcerm=True, pull=False, decode=True):
            if "error" in chunk:
                raise BuildFailed(f"building the sandbox image {tag} failed: {chunk['error'].strip()}")
            text = str(chunk.get("stream", "")).strip()
            if text.startswith("Step "):
                progress.detail(text[:140])
    except docker.errors.APIError as exc:
        raise BuildFailed(f"building the sandbox image {tag} failed: {exc.explanation}") from None
    image = engine.get_image(tag)
    if image is None:
        raise BuildFailed(f"the engine built {tag} but does not list it")
    return SandboxImage(tag, image.id, False, time.monotonic() - start)


def _context(dockerfile: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text, mode in (("Dockerfile", dockerfile, 0o644), ("workbench-sandbox-init", INIT_SCRIPT, 0o755)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@dataclass(frozen=True)
class SshKey:
    private: Path
    authorized_keys: Path


def ensure_key(config: Config) -> SshKey:
    """The sandboxes' SSH key, made once per state directory (the image carries none)."""
    directory = config.state_dir / "sandbox" / "ssh"
    private = directory / "id_ed25519"
    authorized = directory / "authorized_keys"
    if not private.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        partial = directory / "id_ed25519.partial"
        partial.unlink(missing_ok=True)
        partial.with_suffix(".partial.pub").unlink(missing_ok=True)
        comment = f"{config.prefix}-sandbox"
        run.capture(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(partial)])
        partial.with_suffix(".partial.pub").replace(private.with_suffix(".pub"))
        partial.replace(private)
    if not authorized.is_file():
        # Mounted read-only into each sandbox; sshd accepts a root-owned 0644 file.
        authorized.write_text(private.with_suffix(".pub").read_text())
        authorized.chmod(0o644)
    return SshKey(private, authorized)

