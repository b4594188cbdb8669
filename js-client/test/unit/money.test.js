// Credits and prices (src/money.js) as python/kiln/protocol/money.py counts them: exact
// decimal text, nothing finer than a micro-credit, the same rounding of due and worst case.
import { test } from "node:test";
import assert from "node:assert/strict";

import { UsageError, due, formatCredits, isFree, secondsCovered, toMicro, within, worstCase } from "../../src/node/index.js";
import { billableCpu, priceMessage } from "../../src/money.js";

test("toMicro takes credits as written, exactly", () => {
  const cases = [
    [0, 0], [1, 1_000_000], [0.1, 100_000], [0.05, 50_000], [1.000001, 1_000_001], ["1.5", 1_500_000],
    [" 2 ", 2_000_000], ["1e-6", 1], [1e-6, 1], ["0.0000010", 1], [".5", 500_000], ["5.", 5_000_000], ["-0", 0],
    ["1E3", 1_000_000_000], [1e9, 10 ** 15], [0.30000000000000004 * 0 + 0.3, 300_000], [10n, 10_000_000],
  ];
  for (const [credits, micro] of cases) assert.equal(toMicro(credits), micro, String(credits));
});

test("toMicro refuses what is finer than a micro-credit, negative, too large or not a number", () => {
  const refused = (value, pattern) =>
    assert.throws(() => toMicro(value, "the budget"), (e) => e instanceof UsageError && e.code === "bad_message" && pattern.test(e.message), String(value));
  for (const fine of [1e-7, "0.0000001", 0.1 + 0.2, "1e-7", "1e-999"]) refused(fine, /the budget .* finer than a micro-credit/);
  for (const out of [-1, "-0.5", 1e9 + 1, "1e999999999", Number.MAX_VALUE]) refused(out, /out of range/);
  for (const bad of ["", "abc", "1.2.3", "0x10", "1 5", "1_000", "\u0663", "\uff11", "NaN", Number.NaN, Infinity, true, null, undefined, {}, [1]]) {
    refused(bad, /a number of credits/); // as Python's to_micro (tests/unit/test_money.py)
  }
});

test("formatCredits shows micro-credits as credits without trailing zeros", () => {
  assert.deepEqual([1_500_000, 0, 1, 10_000, -2_500_000, 10 ** 15].map(formatCredits), ["1.5", "0", "0.000001", "0.01", "-2.5", "1000000000"]);
});

test("a price in credits becomes the wire's micro-credits; unknown rates are refused", () => {
  assert.deepEqual(priceMessage({ start: 0.01, cpuHour: 0.2, envHour: "0.05" }), { start: 10_000, cpu_hour: 200_000, env_hour: 50_000 });
  assert.deepEqual(priceMessage({}), { start: 0, cpu_hour: 0, env_hour: 0 });
  assert.throws(() => priceMessage({ cpu_hour: 1 }, "maxPrice"), /maxPrice has no rate "cpu_hour"/);
  assert.throws(() => priceMessage({ start: 1e-9 }, "maxPrice"), /maxPrice's start .* finer/);
  assert.throws(() => priceMessage(null), UsageError);
});

// The values python/kiln/protocol/money.py gives for the same arguments.
const PRICE = { start: 10_000, cpu_hour: 200_000, env_hour: 50_000 };

test("due and worstCase round as Python's money module does, to the micro-credit", () => {
  assert.equal(due(PRICE, 3600.5, 1234.567), 128594);
  assert.equal(due(PRICE, 0.1, 0.3), 10018);
  assert.equal(due(PRICE, -5, 0), 10_000);
  assert.equal(worstCase(PRICE, 1.5, 3600), 360_000);
  assert.equal(worstCase(PRICE, 0.3, 61.7), 11886);
  assert.equal(worstCase({ start: 0, cpu_hour: 0, env_hour: 0 }, 4, 3600), 0);
  assert.equal(worstCase({ start: 0, cpu_hour: 1, env_hour: 0 }, 1, 1), 1, "a part of a micro-credit rounds up");
  assert.equal(due({ start: 0, cpu_hour: 1, env_hour: 0 }, 1, 1), 0, "and down in what is due");
});

test("billable CPU, seconds covered, caps and free prices", () => {
  assert.equal(billableCpu(100, 2, 30), 60, "no more CPU than the CPUs rented times the wall time");
  assert.equal(billableCpu(10, 2, 30), 10);
  assert.equal(secondsCovered(PRICE, 1, 10_000 + 250_000), 3600);
  assert.equal(secondsCovered(PRICE, 1, 5), 0);
  assert.equal(secondsCovered({ start: 1, cpu_hour: 0, env_hour: 0 }, 1, 5), Infinity);
  assert.ok(within(PRICE, { start: 10_000, cpu_hour: 200_000, env_hour: 60_000 }));
  assert.ok(!within(PRICE, { start: 10_000, cpu_hour: 199_999, env_hour: 60_000 }));
  assert.ok(isFree(null) && isFree({ start: 0, cpu_hour: 0, env_hour: 0 }) && !isFree(PRICE));
});
