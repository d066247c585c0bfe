"""Command modules plugged into the CLI: each has configure(parser) and main(args) -> int."""
