// Reference: a minimal Node socket.io 4.8 broadcaster. Every client is in one room (the namespace);
// POST /publish {"changes": [...]} emits each change as its own "chainhook:event" to all of them.
// Stock settings (websocket compression off, as socket.io's default). Prints {"port": n} when listening.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 0);

const http = createServer(async (req, res) => {
  if (req.method !== "POST" || req.url !== "/publish") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const { changes } = JSON.parse(Buffer.concat(chunks).toString());
  for (const change of changes) io.emit("chainhook:event", change);
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ emitted: changes.length }));
});

const io = new Server(http, { maxHttpBufferSize: 1e6 });
io.on("connection", (socket) => {
  // The load client subscribes as it would to timebank-realtime; everyone gets everything here.
  socket.on("subscribe", (_filter, ack) => ack?.({ ok: true, id: "sub-1", cursor: 0 }));
});

http.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ port: http.address().port })));
