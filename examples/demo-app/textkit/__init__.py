"""textkit: small, dependency-free text helpers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
