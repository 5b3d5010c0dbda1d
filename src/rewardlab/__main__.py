"""``python -m rewardlab``: the command line, also as launchers start it (``torchrun -m rewardlab train``)."""

from rewardlab.cli import main

if __name__ == "__main__":
    main()
