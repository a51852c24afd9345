"""The oracle side of the model: real kernels (live, or old ones under qemu) run operation
scripts in a private window; results are compared step by step with `replay.AddressSpace`.

See docs/oracle.md for the script format, the output format and the comparison policy.
"""

from __future__ import annotations

from .compare import DEFAULT_IGNORE, Disagreement, compare, compare_all
from .core import (
    PAGE,
    WINDOW_BASE,
    WINDOW_PAGES,
    OracleError,
    SeqResult,
    Sequence,
    StepResult,
    VmaRow,
    seq,
)
from .execute import QEMU_KERNELS, build_runner, qemu_available, run_live, run_qemu
from .model import run_model

__all__ = [
    "DEFAULT_IGNORE",
    "PAGE",
    "QEMU_KERNELS",
    "WINDOW_BASE",
    "WINDOW_PAGES",
    "Disagreement",
    "OracleError",
    "SeqResult",
    "Sequence",
    "StepResult",
    "VmaRow",
    "build_runner",
    "compare",
    "compare_all",
    "qemu_available",
    "run_live",
    "run_model",
    "run_qemu",
    "seq",
]
