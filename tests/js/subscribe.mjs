// Connects with the official socket.io-client, subscribes, and prints each pushed change as a JSON
// line: the test suite drives it. Usage: node subscribe.mjs URL TRANSPORT FILTER_JSON EXPECTED_COUNT
import { io } from "socket.io-client";

const [url, transport, filterJson, expected] = process.argv.slice(2);
const want = Number(expected);
// TRANSPORT: "websocket", "polling", or "polling,websocket" (polling, then upgraded: the default).
const socket = io(url, { transports: transport.split(","), reconnection: false });
const print = (kind, message) => console.log(JSON.stringify({ kind, message }));
let received = 0;
const done = () => { socket.close(); process.exit(0); };
const failAfter = setTimeout(() => { print("timeout", { received }); process.exit(2); }, 20000);

socket.on("connect_error", (error) => { print("connect_error", { message: error.message }); process.exit(3); });
socket.on("connect", async () => {
  const ack = await socket.timeout(5000).emitWithAck("subscribe", JSON.parse(filterJson));
  print("ack", ack);
  if (want === 0) { clearTimeout(failAfter); done(); }
});
for (const name of ["chainhook:event", "chainhook:rollback"]) {
  socket.on(name, (message) => {
    print(name, message);
    received += 1;
    if (received === want) { clearTimeout(failAfter); setTimeout(done, 300); }
  });
}
