"""Socket.IO: connections (hub), which socket gets which change (fanout), sending to one socket
(outbox), and the wire, the only code that knows python-socketio's and python-engineio's internals."""
