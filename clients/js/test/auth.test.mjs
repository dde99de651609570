// Client tokens against a server with SOCKET_AUTH_SECRET (tests/test_js_package.py passes the secret as
// TIMEBANK_TEST_SECRET): the token function is asked at each connect, and when a token expires the
// server disconnects the socket ("io server disconnect", which socket.io-client does not retry by
// itself); the client reconnects with a fresh token and misses nothing.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import { assertSameCursors, deliver, history, MONSTERS, openClient, recorder, sleep, until } from "./helpers.mjs";

const SECRET = process.env.TIMEBANK_TEST_SECRET;
const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** An HS256 JWT, as an application backend mints one (docs/protocol.md, "Client authentication"). */
function mint(claims) {
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

test("an expired token is replaced by a fresh one at the reconnect, and nothing is missed", { timeout: 45_000 }, async (t) => {
  assert.ok(SECRET, "TIMEBANK_TEST_SECRET");
  let minted = 0;
  // Each token lives 2 seconds: the server drops the socket when it expires.
  const token = async () => {
    minted += 1;
    return mint({ sub: "test", exp: Math.floor(Date.now() / 1000) + 2 });
  };
  const { client, errors, states } = openClient(t, { token });
  const record = recorder();
  await client.subscribe({ contract: MONSTERS }, record.handler, { since: 0 });
  const deadline = Date.now() + 7_000;
  for (let height = 1; Date.now() < deadline; height++) {
    await deliver(height);
    await sleep(250);
  }
  await until(() => minted >= 3, () => `${minted} tokens, states ${states}`);
  await assertSameCursors(record, (await history({ contract: MONSTERS })).map((row) => row.cursor), "across expiries");
  assert.ok(states.filter((state) => state === "connected").length >= 3, `${states}`);
  // An expired token's reconnect may race its expiry at the server (token_expired): that is reported and
  // retried, nothing else is.
  assert.deepEqual(errors.filter((error) => !/token_expired/.test(error.message)), []);
});

test("without a token the connection is refused, and the refusal is reported", { timeout: 20_000 }, async (t) => {
  const { errors, states } = openClient(t);
  await until(() => errors.length >= 1, () => `${states}`);
  assert.match(errors[0].message, /token_required/);
  assert.equal(errors[0].data?.code, "token_required");
  assert.ok(!states.includes("connected"));
});
