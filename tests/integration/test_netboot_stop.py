"""`netboot.stop` after a node was killed outright: its real daemons are recognised as ours and stopped.

The unit tier proves that pids which are not the node's are never signalled; this
proves the other half with the real dnsmasq, ganesha.nfsd and HTTP server: each
recorded pid passes `run.owns`, so nothing of a killed node is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.support.commands import FAB
from tests.support.config import REPO
from workbench.core import config as wb_config
from workbench.core import run
from workbench.netboot import netns, node


def test_stop_after_the_node_was_killed_outright(nb_cfg: wb_config.Config) -> None:
    env = {**os.environ, wb_config.ENV_CONFIG: str(nb_cfg.path)}
    serve = subprocess.Popen(
        [str(FAB), "netboot.serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run.wait_until(lambda: bool(node.serving(nb_cfg)) or serve.poll() is not None, timeout=60, what="the node")
        assert serve.poll() is None, serve.stdout and serve.stdout.read()
        pids = node.serving(nb_cfg)["pids"]
        marker = f"{node.node_dir(nb_cfg)}/"
        assert all(run.owns(pid, node.PROGRAMS[what], marker) for what, pid in pids.items()), pids
        # Killed outright: no clean-up, its daemons are left to init.
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait()
        done = node.stop(nb_cfg)
        assert sorted(done) == sorted(
            [f"killed a leftover {what} (pid {pid})" for what, pid in pids.items()]
            + [f"removed namespace {netns.namespace_name(nb_cfg.prefix)}"]
        )
        time.sleep(0.1)
        assert not any(run.owns(pid, node.PROGRAMS[what], marker) for what, pid in pids.items())
        assert not netns.exists(netns.namespace_name(nb_cfg.prefix))
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
