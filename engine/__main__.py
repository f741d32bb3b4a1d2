"""``python -m engine``: the ``leadflow`` command, for a checkout that is not installed."""

from engine.cli import run

if __name__ == "__main__":
    run()
