// Preload (`node --import ./test/strict-effects.mjs --test test/react.test.mjs`) that makes every effect run
// as React 18's StrictMode runs it on mount: set up, cleaned up and set up again, at once, with the same
// state (and on every later run too, which StrictMode spares). StrictMode does this with react-dom's createRoot, but react-test-renderer 18 is built without
// it (it double-renders, never double-runs effects), and these tests have no DOM. It patches the
// `useEffect` of the one React module before any ES module reads it (an ES import of a CommonJS module
// takes its exports' values when first imported), so the hooks under test get it too.

import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const React = require("react");
const useEffect = React.useEffect;

React.useEffect = function useEffectRunTwice(setup, deps) {
  return useEffect(() => {
    const cleanup = setup();
    if (typeof cleanup === "function") cleanup();
    return setup();
  }, deps);
};
globalThis.TIMEBANK_STRICT_EFFECTS = true;
