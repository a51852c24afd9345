"""The verbs of the ``vmatrace`` command, one module each.

Each module defines ``add_parser(subparsers)`` (which sets ``func``) and keeps its heavy imports
(bcc, numpy, the recorder, the model) inside the function that runs the verb, so that building
the parser, ``--help`` included, imports none of them. :data:`COMMANDS` is the static list
``vmatrace.cli`` registers, in the order ``--help`` shows them.
"""

COMMANDS: tuple[str, ...] = (
    "snapshot",
    "top",
    "doctor",
    "record",
    "import_strace",
    "info",
    "replay",
    "report",
)
