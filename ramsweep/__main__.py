"""`python -m ramsweep` is the `ramsweep` command."""

from ramsweep.cli import main

if __name__ == "__main__":
    main()
