/**
 * The market's options of a rent (protocol 1.5) checked and put in the wire's names: shared by
 * `Requestor#rent` and the jobs that pass them with every rent. No I/O.
 * @module
 */
export type RentMarket = Pick<import("./requestor.js").RentOptions, "budget" | "strategy" | "allow" | "deny" | "minReputation" | "maxDuration">;
/**
 * The market's fields of a rent (1.5) in the wire's names, only those given; a UsageError for a bad value.
 * @param {RentMarket} options
 * @param {string | null} group
 */
export declare function marketFields(options: RentMarket, group: string | null): {
    max_duration?: number;
    budget?: number;
    strategy?: import("./requestor.js").Strategy;
    allow?: string[];
    min_reputation?: number;
};
