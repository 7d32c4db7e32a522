"""harness: benchmark and profile memory-saving techniques for transformer language models."""

__version__ = "0.1.0"
