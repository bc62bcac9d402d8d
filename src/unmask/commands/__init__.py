"""CLI subcommands, one module each.

Each module defines ``register(subparsers) -> None``, which adds its parser and sets
``func=run`` where ``run(args: argparse.Namespace) -> int`` returns the exit code.
"""

COMMANDS = ("prepare", "train", "generate", "demo")
