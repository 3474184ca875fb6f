"""A node's cloud configuration over the real HTTP server in its namespace: only to its own address.

Other machines on the lab's bridge are namespaces wired to it (netns.host), one at a
time (they share the bridge port's name): the address the inventory reserves for
hv1 gets its file, hv2's address and the node's own get 403, an unknown name 404.
"""

from __future__ import annotations

import json
import stat
import subprocess

from tests.support.netboot import CLOUD_FOR_HV1 as CLOUD
from tests.support.netboot import EXAMPLE
from workbench.core import config as wb_config
from workbench.netboot import httpserve, inventory, netns, node, timeline

URL = "http://10.77.0.1:8080"


def get(where: list[str], path: str, *curl: str) -> tuple[int, str]:
    """Status and body of a request from the namespace `where` runs in (curl keeps `..` as sent)."""
    argv = [*where, "curl", "-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", *curl, f"{URL}{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_cloud_configuration_only_to_the_nodes_own_address(nb_cfg: wb_config.Config) -> None:
    inv = inventory.load(nb_cfg, EXAMPLE)
    hv1, hv2 = inv.node("hv1"), inv.node("hv2")
    # Written before the node starts, as `fab cloud.up` does: a start must leave it.
    folder = node.cloud_config_dir(nb_cfg)
    folder.mkdir(parents=True)
    (folder / f"{hv1.name}.json").write_text(json.dumps(CLOUD))
    with node.running(nb_cfg, inv) as running:
        assert json.loads((folder / f"{hv1.name}.json").read_text()) == CLOUD
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        clients = json.loads((running.state / "cloud-clients.json").read_text())
        assert clients == {hv1.name: hv1.address, hv2.name: hv2.address}
        with netns.host(running.lab, f"{nb_cfg.prefix}-h", hv1.address, 24) as own:
            mine = own.exec_prefix()
            status, body = get(mine, f"/cloud/{hv1.name}.json")
            assert status == 200 and json.loads(body) == CLOUD
            assert get(mine, f"/cloud/{hv1.name}.json", "-I")[0] == 200
            # Another node's file, even one that does not exist (yet): not for this address.
            assert get(mine, f"/cloud/{hv2.name}.json")[0] == 403
            assert get(mine, "/cloud/hv9.lab.wpdn.json")[0] == 404
            assert get(mine, "/cloud/")[0] == 404
        with netns.host(running.lab, f"{nb_cfg.prefix}-h", hv2.address, 24) as other:
            theirs = other.exec_prefix()
            status, body = get(theirs, f"/cloud/{hv1.name}.json")
            assert status == 403 and "passwords" not in body
            assert get(theirs, f"/cloud/{hv1.name}.json", "-I")[0] == 403
            # No spelling of the path reaches the file another way.
            assert get(theirs, f"/boot/../cloud/{hv1.name}.json")[0] == 403
            assert get(theirs, f"/live/%2e%2e/cloud/{hv1.name}.json")[0] == 403
            assert get(theirs, f"/cloud/{hv2.name}.json")[0] == 404  # its own name, no file for it
            # The rest of the tree is served as before.
            assert get(theirs, "/boot/hv2.ipxe")[0] == 200
        # The node itself is no node of the inventory.
        assert get(running.lab.exec_prefix(), f"/cloud/{hv1.name}.json")[0] == 403
    log = [e for e in httpserve.read_log(node.node_dir(nb_cfg) / "http.jsonl") if e["method"] == "GET"]
    assert [(e["client"], e["path"], e["status"]) for e in log] == [
        (hv1.address, f"/cloud/{hv1.name}.json", 200),
        (hv1.address, f"/cloud/{hv2.name}.json", 403),
        (hv1.address, "/cloud/hv9.lab.wpdn.json", 404),
        (hv1.address, "/cloud/", 404),
        (hv2.address, f"/cloud/{hv1.name}.json", 403),
        (hv2.address, f"/boot/../cloud/{hv1.name}.json", 403),
        (hv2.address, f"/live/%2e%2e/cloud/{hv1.name}.json", 403),
        (hv2.address, f"/cloud/{hv2.name}.json", 404),
        (hv2.address, "/boot/hv2.ipxe", 200),
        ("10.77.0.1", f"/cloud/{hv1.name}.json", 403),
    ]
    assert log[0]["bytes"] == len(json.dumps(CLOUD))
    # A stop leaves the cloud's files too.
    assert json.loads((folder / f"{hv1.name}.json").read_text()) == CLOUD


def test_a_second_report_of_the_same_boot_updates_the_first(nb_cfg: wb_config.Config) -> None:
    """workbench-cloud reports again with a `cloud` field: the boot's report time stays, the timeline shows it."""
    inv = inventory.load(nb_cfg, EXAMPLE)
    hv1 = inv.node("hv1")
    first = {"name": hv1.name, "mac": hv1.mac, "boot": "b1", "role": "hypervisor"}
    with node.running(nb_cfg, inv) as running, netns.host(running.lab, f"{nb_cfg.prefix}-h", hv1.address, 24) as own:

        def post(report: dict[str, object]) -> dict[str, object]:
            argv = [*own.exec_prefix(), "curl", "-sf", "-d", json.dumps(report), f"{URL}/report"]
            subprocess.run(argv, check=True, timeout=30)
            return httpserve.read_reports(running.state)[hv1.address]

        received = post(first)["received"]
        assert get(own.exec_prefix(), f"/cloud/{hv1.name}.json")[0] == 404  # a lab without a cloud
        updated = post({**first, "cloud": {"state": "starting"}})
        assert (updated["received"], updated["name"], updated["cloud"]) == (received, hv1.name, {"state": "starting"})
        assert updated["updated"] >= received
        line = next(t for t in timeline.build(inv, running.state) if t.node == hv1).to_dict()
        assert line["last"] == "reported"
        assert line["cloud"]["status"] == 404 and line["cloud"]["state"] == "starting"
        assert "cloud: configuration" in timeline.render([next(t for t in timeline.build(inv, running.state))])
        # The next boot (another boot id) is a new report: no cloud field carried over.
        rebooted = post({**first, "boot": "b2"})
        assert rebooted["received"] > received and "cloud" not in rebooted and "updated" not in rebooted
