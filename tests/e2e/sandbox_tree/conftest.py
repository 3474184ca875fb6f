# This folder is a small checkout the sandbox tests copy and edit; its role
# tests run inside sandboxes, never in the workbench's own test session.
collect_ignore = ["tests"]
