/**
 * The one exception the pure protocol core throws (`kiln.protocol.ProtocolViolation`).
 * @module
 */

export class ProtocolViolation extends Error {
  /**
   * @param {string} code the stable error code to answer with
   * @param {string} message
   * @param {number | null} [re] the id of the request the bad message carried, when readable
   */
  constructor(code, message, re = null) {
    super(message);
    this.name = "ProtocolViolation";
    this.code = code;
    this.re = re;
  }
}
