"""The `kmod` module of container bakes: kernel modules are refused, by name.

images/scripts/provision.sh makes this Salt's `kmod` provider in container
bakes only. A container cannot load kernel modules (it shares its host's
kernel, whose /proc/modules it would see as its own), so `kmod.present` fails:
it calls `mod_list` first, which says why. VMs load them.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "workbench_kmod"

_WHY = (
    "a container cannot load kernel modules: it shares its host's kernel. "
    "Turn this off in the formula's pillar (or load the module on the Docker host; a qemu bake loads it)"
)


def __virtual__():
    return (False, "workbench_kmod is the container bakes' `kmod` provider (images/scripts/provision.sh)")


def mod_list(only_persist=False):
    raise CommandExecutionError(_WHY)


def lsmod():
    raise CommandExecutionError(_WHY)


def available():
    raise CommandExecutionError(_WHY)


def load(mod, persist=False):
    raise CommandExecutionError(f"{mod}: {_WHY}")
