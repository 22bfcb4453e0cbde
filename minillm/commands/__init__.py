"""The `minillm ...` commands: one module per command, each with `add_arguments(parser)` and `run(args) -> int`.

This is the harness layer: argument parsing, reading config files and printing live here, never in the library
modules below (`train`, `generate`, `checkpoint`, `grading`), which take Python arguments and return values.
"""
