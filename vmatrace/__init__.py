"""vmatrace: trace-replay analysis of Linux process address spaces."""

__version__ = "0.1.0"
