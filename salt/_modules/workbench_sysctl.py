"""The `sysctl` module of container bakes: kernel parameters are refused, by name.

images/scripts/provision.sh makes this Salt's `sysctl` provider in container
bakes only. A container runs on its host's kernel: a parameter set during the
bake would change the build host (or fail, or match the host by chance), and
the image could not carry it anyway. So `sysctl.present` fails, naming the
parameter, whatever the host's value; reading parameters is Salt's own
(linux_sysctl). Formulas that set one by default turn it off in their pillar
(the redis formula: `redis: {overcommit_memory: false}`). VMs set them.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "workbench_sysctl"


def __virtual__():
    return (False, "workbench_sysctl is the container bakes' `sysctl` provider (images/scripts/provision.sh)")


def _refuse(name, value):
    raise CommandExecutionError(
        f"a container cannot set the kernel parameter {name} = {value}: it shares its host's kernel. "
        "Turn this off in the formula's pillar (or set it on the Docker host; a qemu bake sets it)"
    )


def assign(name, value):
    _refuse(name, value)


def persist(name, value, config=None):
    _refuse(name, value)
