"""dataserv: a federated registry for storage farmers, on Twisted and PostgreSQL."""

__version__ = "3.0.0"
