"""`python -m edgectl`."""

from edgectl.cli.main import run

run()
