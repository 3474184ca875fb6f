"""The netbooted homelab: inventory, boot artifacts, the networking node, the VM proof."""
