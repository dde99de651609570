"""PostgreSQL: the only package that holds SQL. ``db`` opens and guards connections, ``migrate``
brings the schema up to date, ``deliveries`` is the one write path (webhook and importer), ``reads``
the read side (the change log for the tailer and the sockets, events for the history API)."""
