"""``python -m kernlet``: the ``kernlet`` command (the same as the console script)."""

from kernlet.cli import main

main(prog_name="kernlet")
