"""Removing a prefix on the real engine, the clean-up every test and task relies on."""

from __future__ import annotations

import contextlib
import io
import secrets
import tarfile

import docker.errors
import pytest

from workbench.core import engine
from workbench.core.errors import WorkbenchError


def _tiny_image(prefix: str, name: str) -> str:
    """An image from a one-file root filesystem, labelled with `prefix`."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    result = engine.client().api.import_image_from_data(
        data.getvalue(), repository=f"{prefix}/{name}", tag="1", changes=[f"LABEL {engine.PREFIX_LABEL}={prefix}"]
    )
    return str(engine.get_image(f"{prefix}/{name}:1").id) if result else ""


def test_remove_prefix_takes_children_before_parents(docker_engine: None) -> None:
    prefix = f"wbt-eng-{secrets.token_hex(3)}"
    parent = _tiny_image(prefix, "parent")
    container = engine.client().containers.create(parent, command=["/hello"], labels={engine.PREFIX_LABEL: prefix})
    # Committed within the same second as its parent: creation time cannot order them.
    container.commit(repository=f"{prefix}/child", tag="1", conf={"Labels": {engine.PREFIX_LABEL: prefix}})
    network = engine.client().networks.create(f"{prefix}-net", labels={engine.PREFIX_LABEL: prefix})
    try:
        assert engine.remove_prefix(prefix) == 4
        assert engine.images({engine.PREFIX_LABEL: prefix}) == []
        assert engine.containers({engine.PREFIX_LABEL: prefix}) == []
    finally:
        engine.remove_container(container.id)
        for ref in (f"{prefix}/child:1", f"{prefix}/parent:1"):
            engine.remove_image(ref)
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def test_remove_prefix_names_images_others_are_built_on(docker_engine: None) -> None:
    prefix = f"wbt-eng-{secrets.token_hex(3)}"
    other = f"{prefix}-other"
    parent = _tiny_image(prefix, "parent")
    container = engine.client().containers.create(parent, command=["/hello"])
    container.commit(repository=f"{other}/child", tag="1", conf={"Labels": {engine.PREFIX_LABEL: other}})
    engine.remove_container(container.id)
    try:
        with pytest.raises(WorkbenchError, match=rf"cannot remove 1 image\(s\) of {prefix}.*{prefix}/parent:1"):
            engine.remove_prefix(prefix)
    finally:
        engine.remove_prefix(other)
        engine.remove_prefix(prefix)
