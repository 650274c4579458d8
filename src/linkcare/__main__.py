"""`python -m linkcare` runs the command line."""

from linkcare.cli import main

main()
