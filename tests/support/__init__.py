"""Helpers shared by the test tiers and by bench/: import them as `tests.support.<module>`.

The repository root is on sys.path (pytest's `pythonpath` setting in
pyproject.toml; each bench script puts it there), so these are ordinary
modules, imported once. Fixtures stay in conftest.py files (tests/conftest.py
for the session, one per tier for that tier's own); nothing imports a conftest.

tests/roles is not a user of this package: bakes run those tests against
images, with only tests/roles on their path.
"""
