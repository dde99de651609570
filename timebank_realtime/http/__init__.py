"""The HTTP edge: the Chainhook webhook, the history API, operations endpoints, one error shape."""
