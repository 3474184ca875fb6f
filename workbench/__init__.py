"""The workbench: bake, verify, release and roll back role images from one checkout."""

__version__ = "0.1.0"
