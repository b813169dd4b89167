"""The ``hypermesh`` command line (main.py); importing the package as the command starts holds Ctrl-C (hold_ctrl_c)."""

from hypermesh.cli import hold_ctrl_c

hold_ctrl_c.hold()
