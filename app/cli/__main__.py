"""`python -m app.cli`: the same command as `cbir`."""

from app.cli import main

main()
