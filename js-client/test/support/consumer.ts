// A TypeScript program using the map family both ways round, checked against the package's
// declarations by test/unit/types.test.js (the package imports itself by name, as a user's
// project imports it).
import { Job, PortSocket, Publication, Redundant, SpotCheck, connect, toMicro } from "kiln-client";
import type { Balance, CostInfo, Forward, JobOptions, Worker } from "kiln-client";

const requestor = await connect("ws://127.0.0.1:7465");
const worker: Worker<number, string> = async (act, part, context) => `${part} ${context.attempt} ${act.provider}`;
const options: JobOptions = { image: "kiln-busybox:latest" };

// map(worker, parts): the order of both languages.
const results: string[] = await requestor.map(worker, [1, 2], options);
for await (const [index, result] of requestor.mapUnordered(worker, [1, 2], options)) console.log(index, result);
const job: Job<number, string> = requestor.job(worker, [1, 2], options);
const made: Job<number, string> = new Job(requestor, worker, [1, 2], options);

// The old order, (parts, worker): deprecated for one release, still a program that compiles.
const old: string[] = await requestor.map([1, 2], worker, options);
for await (const [index, result] of requestor.mapUnordered([1, 2], worker, options)) console.log(index, result);
const oldJob: Job<number, string> = requestor.job([1, 2], worker, options);
const oldMade: Job<number, string> = new Job(requestor, [1, 2], worker, options);

// Neither order holds a wrong type.
// @ts-expect-error the worker makes strings
const wrong: number[] = await requestor.map(worker, [1, 2], options);
// @ts-expect-error the worker takes numbers
await requestor.map(["a"], worker, options);
// @ts-expect-error two parts lists and no worker
await requestor.map([1], [2], options);

// The market (1.5): caps in credits, a budget, a strategy, verification; balance and costs.
const priced: JobOptions = {
  image: "kiln-busybox:latest",
  demand: { cpus: 1, maxPrice: { start: 0.01, cpuHour: 0.2, envHour: "0.05" } },
  budget: 5,
  strategy: "cheapest",
  deny: ["p9"],
  minReputation: 0.8,
  verify: new Redundant(2, { agree: (a, b) => a === b }),
};
const checked: JobOptions = { ...priced, verify: new SpotCheck(0.1) };
const balance: Balance = await requestor.balance();
const stop = requestor.onCost((cost: CostInfo) => console.log(cost.due, cost.final));
const worst: number = await requestor.estimate({ cpus: 2 }, { maxDuration: 3600, activities: 4, budget: 10 });
const micro: number = toMicro("0.05");
// @ts-expect-error not a strategy the hub knows
const badStrategy: JobOptions = { image: "x", strategy: "random" };
stop();

// Ports (1.7): a connection is a PortSocket in a browser (a Duplex in Node), a forward has its port, a publication its URL.
const act = await requestor.rent({ image: "kiln-busybox:latest" });
const sock = await act.connect(8080);
if (sock instanceof PortSocket) sock.send("GET / HTTP/1.0\r\n\r\n");
const fwd: Forward = await act.forward(8080, { localPort: 0 });
const pub: Publication = await act.publish(8080);
const where: string = `${fwd.host}:${fwd.port} ${pub.url}`;
await pub.revoke();
// @ts-expect-error a port is a number
await act.connect("8080");

console.log(where, results, job, made, old, oldJob, oldMade, wrong, checked, balance, worst, micro, badStrategy);
