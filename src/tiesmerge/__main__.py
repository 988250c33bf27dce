"""`python -m tiesmerge …`: the console script (signals handled from the first line)."""

from tiesmerge.cli.entry import main

if __name__ == "__main__":
    main()
