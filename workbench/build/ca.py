"""The host's own certificate authorities, lent to builds and never baked in.

HTTPS from containers here goes through an intercepting proxy whose CA only
the host trusts (`/usr/local/share/ca-certificates/`). A build that fetches
over HTTPS (pip, a formula's download) needs it; the image must not keep it.
The provision script installs these files under a `workbench-build-` name and
removes them (and re-runs update-ca-certificates) before the commit.

`WORKBENCH_HOST_CA_DIR` names another directory to read them from (the tests
lend a throwaway CA this way, so that the check does not depend on this
machine having any).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
ENV_HOST_CA_DIR = "WORKBENCH_HOST_CA_DIR"


def host_ca_dir() -> Path:
    """Where the host's custom CAs are: `$WORKBENCH_HOST_CA_DIR`, else HOST_CA_DIR."""
    return Path(os.environ.get(ENV_HOST_CA_DIR) or HOST_CA_DIR)


def host_cas(directory: Path | None = None) -> list[Path]:
    """The host's custom CA certificates (`*.crt`, as update-ca-certificates reads them)."""
    directory = directory or host_ca_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*.crt") if p.is_file())


def copy_into(dest: Path, directory: Path | None = None) -> list[str]:
    """Copy the host's CAs into a bundle's `ca/` directory; their names."""
    directory = directory or host_ca_dir()
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for path in host_cas(directory):
        name = str(path.relative_to(directory)).replace("/", "-")
        shutil.copyfile(path, dest / name)
        names.append(name)
    return names
