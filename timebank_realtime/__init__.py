"""timebank-realtime: Stacks events from Chainhook, stored in PostgreSQL, pushed over Socket.IO."""

__version__ = "0.1.0"
