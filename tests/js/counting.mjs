// What the scripts driving the served browser client share: an in-memory cursor storage, one JSON line
// per thing worth telling the test, and handlers that count changes per subscription and exit 0 once
// every count is reached (2 with the counts so far if they are not within the time limit).
export const memoryStorage = () => {
  const values = new Map();
  return { get: (k) => (values.has(k) ? values.get(k) : null), set: (k, v) => { values.set(k, v); }, values };
};

export const print = (line) => console.log(JSON.stringify(line));

export function countUntil(expected, timeoutMs, close) {
  const counts = Object.fromEntries(Object.keys(expected).map((name) => [name, 0]));
  const failAfter = setTimeout(() => { print({ timeout: counts }); process.exit(2); }, timeoutMs);
  return (sub) => (kind, change) => {
    print({ sub, cursor: change.cursor });
    counts[sub] += 1;
    if (Object.keys(expected).every((name) => counts[name] === expected[name])) {
      clearTimeout(failAfter);
      setTimeout(() => { close(); process.exit(0); }, 500);
    }
  };
}
