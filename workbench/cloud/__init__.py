"""The homelab OpenStack: a baked controller on the lab LAN, netbooted hypervisors.

`lab` checks `[cloud]` against the netboot inventory; `secrets` keeps the
cloud's passwords out of every image; `controller` runs the controller image
as a container with its settings and data under the state dir; `api` speaks to
the cloud through openstacksdk; `cloud` composes `fab cloud.up/status/down`.
"""
