"""The version of the Kiln distribution (one place for it: read by hatch, the CLI and every peer's hello)."""

__version__ = "0.1.0"
