"""The networking node with real dnsmasq and HTTP in a real namespace (no VM, stand-in artifacts).

The live image's files are replaced by small stand-ins here: this tier proves the
node serves, answers, logs and cleans up; tests/e2e boots the real image.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.commands import FAB, fab
from tests.support.config import REPO
from tests.support.netboot import EXAMPLE
from workbench.core import config as wb_config
from workbench.core.errors import NetbootError
from workbench.netboot import artifacts, httpserve, inventory, netns, node


def in_lab(cfg: wb_config.Config, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    name = netns.namespace_name(cfg.prefix)
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, check=check, timeout=30)


def dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)


RESOLVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(bytes.fromhex(sys.argv[1]), ("10.77.0.1", 53))
reply = s.recv(512)
print(".".join(str(b) for b in reply[-4:]), reply[3] & 15)
"""


def test_node_serves_tftp_http_dns_and_reports(nb_cfg: wb_config.Config) -> None:
    inv = inventory.load(nb_cfg, EXAMPLE)
    with node.running(nb_cfg, inv) as running:
        assert netns.exists(running.lab.name)
        loader = in_lab(
            nb_cfg, "curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", "tftp://10.77.0.1/undionly.kpxe"
        )
        assert int(loader.stdout) == Path("/usr/lib/ipxe/undionly.kpxe").stat().st_size
        script = in_lab(nb_cfg, "curl", "-sf", "http://10.77.0.1:8080/boot/hv1.ipxe").stdout
        assert script.startswith("#!ipxe") and "wb.role=hypervisor" in script
        in_lab(nb_cfg, "curl", "-sf", "-o", "/dev/null", f"http://10.77.0.1:8080/live/{running.live.digest}/vmlinuz")
        missing = in_lab(
            nb_cfg,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://10.77.0.1:8080/live/nothing/vmlinuz",
            check=False,
        )
        assert missing.stdout == "404"
        answer = in_lab(nb_cfg, "python3", "-c", RESOLVE, dns_query("hv2.lab.wpdn").hex()).stdout.split()
        assert answer == ["10.77.0.12", "0"]
        unknown = in_lab(nb_cfg, "python3", "-c", RESOLVE, dns_query("hv9.lab.wpdn").hex()).stdout.split()
        assert unknown[1] == "3"  # NXDOMAIN: the lab domain is answered locally, never forwarded
        listening = in_lab(nb_cfg, "ss", "-ltn").stdout
        # Ganesha listens on a v4-mapped socket: "[::ffff:10.77.0.1]:2049".
        assert "10.77.0.1]:2049" in listening and "10.77.0.1:8080" in listening
        assert set(running.pids) == {"http", "nfs", "dnsmasq"}
        # A second node on the same prefix is refused, and the first keeps serving.
        with pytest.raises(NetbootError, match="already exists"), node.running(nb_cfg, inv):
            pass
        in_lab(nb_cfg, "curl", "-sf", "-d", '{"name": "x", "role": "y"}', "http://10.77.0.1:8080/report")
        pids = list(running.pids.values())
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    assert not netns.exists(netns.namespace_name(nb_cfg.prefix))
    log = httpserve.read_log(node.node_dir(nb_cfg) / "http.jsonl")
    assert [e["status"] for e in log] == [200, 200, 404, 204]
    reports = httpserve.read_reports(node.node_dir(nb_cfg))
    assert reports["10.77.0.1"]["role"] == "y"
    assert "sent" in (node.node_dir(nb_cfg) / "dnsmasq.log").read_text()


def test_http_port_already_taken(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with (
            pytest.raises(NetbootError, match=f"HTTP port 127.0.0.1:{port} is already in use"),
            httpserve.serving(tmp_path, "127.0.0.1", port, tmp_path),
        ):
            pass
    finally:
        holder.close()
    out = (tmp_path / "http.out").read_text()
    assert httpserve.PORT_IN_USE in out


def test_serve_status_stop_through_fab(nb_cfg: wb_config.Config) -> None:
    env = {**os.environ, wb_config.ENV_CONFIG: str(nb_cfg.path)}
    serve = subprocess.Popen(
        [str(FAB), "netboot.serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (node.node_dir(nb_cfg) / "node.json").exists():
            assert serve.poll() is None and time.monotonic() < deadline, serve.stdout and serve.stdout.read()
            time.sleep(0.2)
        status = fab("netboot.status", "--json", config=nb_cfg.path, check=True)
        data = json.loads(status.stdout)
        assert data["running"] is True
        assert [n["node"] for n in data["nodes"]] == ["hv1.lab.wpdn", "hv2.lab.wpdn"]
        assert data["nodes"][0]["last"] == "nothing yet"
        stop = fab("netboot.stop", config=nb_cfg.path, check=True)
        assert "stopped the node" in stop.stdout
        assert serve.wait(timeout=30) == 0
        assert not netns.exists(netns.namespace_name(nb_cfg.prefix))
        again = fab("netboot.stop", config=nb_cfg.path, check=True)
        assert "nothing was running" in again.stdout
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def test_inventory_and_artifact_errors_through_fab(nb_cfg: wb_config.Config, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('address = "10.77.0.12"', 'address = "10.77.0.11"'))
    proc = fab("netboot.serve", f"--inventory={bad}", config=nb_cfg.path)
    assert proc.returncode == 2
    assert f"error: {bad}: 1 problem(s)" in proc.stderr
    assert "[[nodes]] #2 address = '10.77.0.11': duplicate" in proc.stderr
    for path in artifacts.live_dir(nb_cfg).glob("*/manifest.json"):
        path.unlink()
    missing = fab("netboot.serve", config=nb_cfg.path)
    assert missing.returncode == 1
    assert "run `fab netboot.build` first" in missing.stderr
    assert not netns.exists(netns.namespace_name(nb_cfg.prefix))
