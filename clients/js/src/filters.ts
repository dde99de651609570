// Subscription filters: the forms a caller may pass, the payload sent to the server, and matching a live
// change against a filter as the server does (docs/protocol.md, "Filters"). Pure: no I/O.

import type { ChangeMessage } from "./messages.js";

type OneOrMany = string | string[];

/** Fields are AND-ed, each value a string or a list (any of them); {} is every event. */
export interface FieldFilter {
  topic?: "events" | "blocks";
  contract?: OneOrMany;
  address?: OneOrMany;
  event_type?: OneOrMany;
  tx_hash?: OneOrMany;
  asset?: OneOrMany;
  network?: OneOrMany;
}

/** The forms existing Time Bank clients send; the server accepts them too. */
export type SeedFilter =
  | { type: "contract"; contractId: string }
  | { type: "user"; address: string }
  | { type: "event-type"; eventType: string };

export type SubscriptionFilter = FieldFilter | SeedFilter;

const FIELDS = ["contract", "address", "event_type", "tx_hash", "asset", "network"] as const;
type Field = (typeof FIELDS)[number];

// The server compares these in lower case; the others exactly.
const LOWER_CASE: ReadonlySet<Field> = new Set<Field>(["tx_hash", "network"]);

/** A filter ready for matching: each named field a set of accepted values. */
export interface CompiledFilter {
  readonly topic: "events" | "blocks";
  readonly fields: ReadonlyMap<Field, ReadonlySet<string>>;
}

export function isSeedFilter(filter: SubscriptionFilter): filter is SeedFilter {
  return typeof (filter as { type?: unknown }).type === "string";
}

/** A seed form as the field filter it stands for. */
export function fieldFilterOf(filter: SubscriptionFilter): FieldFilter {
  if (!isSeedFilter(filter)) return filter;
  switch (filter.type) {
    case "contract":
      return { contract: filter.contractId };
    case "user":
      return { address: filter.address };
    case "event-type":
      return { event_type: filter.eventType };
    default:
      throw new TypeError(`unknown subscription type ${JSON.stringify((filter as { type: unknown }).type)}`);
  }
}

export function compileFilter(filter: SubscriptionFilter): CompiledFilter {
  const plain = fieldFilterOf(filter);
  const fields = new Map<Field, ReadonlySet<string>>();
  for (const name of FIELDS) {
    const value = plain[name];
    if (value === undefined) continue;
    const values = (Array.isArray(value) ? value : [value]).map((v) => (LOWER_CASE.has(name) ? v.trim().toLowerCase() : v));
    fields.set(name, new Set(values));
  }
  return { topic: plain.topic ?? "events", fields };
}

function fieldValues(change: ChangeMessage, name: Field): (string | null | undefined)[] {
  if (change.topic === "block") return name === "network" ? [change.network] : [];
  switch (name) {
    case "contract":
      return [change.contract_id];
    case "address":
      return change.affected_addresses ?? [];
    case "event_type":
      return [change.event_type];
    case "tx_hash":
      return [change.tx_hash?.toLowerCase()];
    case "asset":
      return [change.asset_identifier];
    case "network":
      return [change.network?.toLowerCase()];
  }
}

/** Whether a live (untagged) change is one the filter asks for. */
export function matches(filter: CompiledFilter, change: ChangeMessage): boolean {
  if ((change.topic === "block") !== (filter.topic === "blocks")) return false;
  for (const [name, accepted] of filter.fields) {
    if (!fieldValues(change, name).some((value) => value != null && accepted.has(value))) return false;
  }
  return true;
}

/** A stable text for a filter, whatever its key order: the default subscription key. */
export function filterKey(filter: SubscriptionFilter): string {
  const plain = fieldFilterOf(filter) as Record<string, unknown>;
  const sorted = Object.keys(plain).sort().map((name) => [name, plain[name]]);
  return JSON.stringify(Object.fromEntries(sorted));
}
