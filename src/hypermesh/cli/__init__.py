"""The ``hypermesh`` command line (main.py); importing the package as the command starts holds Ctrl-C (hold_ctrl_c)."""

from hypermesh.cli import hold_ctrl_c  # noqa: F401  (holds Ctrl-C as it is imported by the command itself)
