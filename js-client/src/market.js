/**
 * The market's options of a rent (protocol 1.5) checked and put in the wire's names: shared by
 * `Requestor#rent` and the jobs that pass them with every rent. No I/O.
 * @module
 */

import { UsageError } from "./errors.js";
import { toMicro } from "./money.js";
import { MAX_EXCLUDE } from "./protocol/generated/limits.js";

/**
 * The market's options of a rent, in the JS API's names.
 * @typedef {Pick<import("./requestor.js").RentOptions, "budget" | "strategy" | "allow" | "deny" | "minReputation" | "maxDuration">} RentMarket
 */

const STRATEGIES = new Set(["least_loaded", "cheapest", "reputation"]);
const MAX_DURATION = 366 * 86400;

/**
 * The market's fields of a rent (1.5) in the wire's names, only those given; a UsageError for a bad value.
 * @param {RentMarket} options
 * @param {string | null} group
 */
export function marketFields(options, group) {
  /** @type {{max_duration?: number, budget?: number, strategy?: import("./requestor.js").Strategy, allow?: string[], min_reputation?: number}} */
  const fields = {};
  const { maxDuration, budget, strategy, allow, deny, minReputation } = options;
  if (typeof deny === "string") throw new UsageError("deny takes a list of provider names, not one string");
  if (maxDuration != null) {
    if (typeof maxDuration !== "number" || !(maxDuration > 0) || maxDuration > MAX_DURATION) {
      throw new UsageError(`maxDuration is a number of seconds above 0 and at most ${MAX_DURATION}, not ${JSON.stringify(maxDuration)}`);
    }
    fields.max_duration = maxDuration;
  }
  if (budget != null) {
    if (group === null) throw new UsageError("a budget is a group's: give the rent a group");
    fields.budget = toMicro(budget, "budget");
  }
  if (strategy != null) {
    if (!STRATEGIES.has(strategy)) throw new UsageError(`strategy is one of ${[...STRATEGIES].join(", ")}, not ${JSON.stringify(strategy)}`);
    fields.strategy = strategy;
  }
  if (allow != null) {
    const names = typeof allow === "string" ? null : [...new Set(allow)].sort();
    if (names === null || names.length === 0 || names.length > MAX_EXCLUDE || names.some((n) => typeof n !== "string")) {
      throw new UsageError(`allow is a list of 1 to ${MAX_EXCLUDE} provider names`);
    }
    fields.allow = names;
  }
  if (minReputation != null) {
    if (typeof minReputation !== "number" || !(minReputation >= 0 && minReputation <= 1)) {
      throw new UsageError(`minReputation is a number from 0 to 1, not ${JSON.stringify(minReputation)}`);
    }
    fields.min_reputation = minReputation;
  }
  return fields;
}

