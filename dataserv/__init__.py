"""dataserv: a federated registry for storage farmers."""

__version__ = "3.0.0"
