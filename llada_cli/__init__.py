"""llada: run LLaDA2.0-Uni end to end on your own GPU."""

__version__ = "0.1.0"
