"""`python -m bip`: the command line where no `bip` script is installed (the Bento's image)."""

from bip.cli import main

main()
