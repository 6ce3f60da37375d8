'use strict';
// A canonical text rendering of a JS value, mirrored by `describe()` in the Rust
// tests, so both sides can compare what a value *is* without sharing a codec.
const FLAG_BITS = { g: 1, i: 2, m: 4, y: 8, u: 16, s: 32, d: 128, v: 256 };
const hex = (v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
function describe(v, path = []) {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean': return String(v);
    case 'number': return 'n:' + (Object.is(v, -0) ? '-0' : String(v));
    case 'bigint': return 'big:' + v.toString();
    case 'string': return 's:' + JSON.stringify(v);
  }
  if (path.includes(v)) return '<cycle>';
  const p = path.concat([v]);
  if (Buffer.isBuffer(v)) return 'Buffer<' + hex(v) + '>';
  if (ArrayBuffer.isView(v)) return v.constructor.name + '<' + hex(v) + '>';
  if (v instanceof ArrayBuffer) return 'ArrayBuffer<' + Buffer.from(v).toString('hex') + '>';
  if (v instanceof Date) return 'Date:' + String(v.getTime());
  if (v instanceof RegExp) {
    let bits = 0;
    for (const c of v.flags) bits |= FLAG_BITS[c] || 0;
    return 'RegExp:' + v.source + ':' + bits;
  }
  if (v instanceof Map) return 'Map{' + [...v].map(([k, x]) => describe(k, p) + '=>' + describe(x, p)).join(',') + '}';
  if (v instanceof Set) return 'Set{' + [...v].map((x) => describe(x, p)).join(',') + '}';
  if (v instanceof Error) {
    let s = 'Error:' + v.name + ':' + JSON.stringify(v.message);
    if (Object.prototype.hasOwnProperty.call(v, 'cause')) s += ':cause=' + describe(v.cause, p);
    s += ':stack=' + JSON.stringify(v.stack);
    return s;
  }
  if (v instanceof Boolean || v instanceof Number || v instanceof String || v instanceof BigInt) {
    return 'Wrap:' + describe(v.valueOf(), p);
  }
  if (Array.isArray(v)) {
    const parts = [];
    for (let i = 0; i < v.length; i++) parts.push(i in v ? describe(v[i], p) : '<hole>');
    const extra = Object.keys(v).filter((k) => !(String(k >>> 0) === k && (k >>> 0) < v.length));
    let s = '[' + parts.join(',') + ']';
    if (extra.length) s += '+{' + extra.map((k) => JSON.stringify(k) + ':' + describe(v[k], p)).join(',') + '}';
    return s;
  }
  return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ':' + describe(v[k], p)).join(',') + '}';
}
module.exports = describe;
