"""``python -m kernlet.cli``: the ``kernlet`` command."""

from kernlet.cli import main

main(prog_name="kernlet")
