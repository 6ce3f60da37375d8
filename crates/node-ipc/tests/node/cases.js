'use strict';
// Values covering every V8 tag Node emits for plain data. Names are keys for
// the Rust side's expectations.
module.exports = function cases() {
  const shared = { k: 1 };
  const cyc = { name: 'c' };
  cyc.self = cyc;
  const twoByteLatin1 = ('\u20ac'.repeat(20) + 'abcdefghijklmnopqrstuvwxyz').slice(20);
  const err = new TypeError('boom');
  err.stack = 'S';
  const errCause = new RangeError('outer', { cause: { code: 7 } });
  errCause.stack = 'T';
  const plainErr = new Error('m');
  plainErr.stack = 'st';
  const pooled = Buffer.from('hello pooled world').subarray(6, 12);
  let deep = { leaf: true };
  for (let i = 0; i < 100; i++) deep = { d: deep };
  const arrShared = [shared, shared];
  return [
    ['undefined', undefined], ['null', null], ['true', true], ['false', false],
    ['int 0', 0], ['int 1', 1], ['int -1', -1], ['int 63', 63], ['int 64', 64], ['int 300', 300],
    ['int max', 2147483647], ['int min', -2147483648], ['num 2^31', 2147483648], ['num 1.5', 1.5],
    ['num -0', -0], ['num NaN', NaN], ['num Infinity', Infinity], ['num date-like', 1700000000000],
    ['num tiny', 5e-324], ['num big', 1e300],
    ['str empty', ''], ['str ready', 'ready'], ['str latin1', 'caf\u00e9'], ['str utf16', 'h\u20acllo'],
    ['str emoji', '\u{1F600}'], ['str long', 'x'.repeat(300)], ['str lone surrogate', 'a\ud800b'],
    ['str two-byte latin1', twoByteLatin1], ['str controls', 'a\n"\\\u0001\u007f'],
    ['obj empty', {}], ['obj a:1', { a: 1 }], ['obj int key', { 1: 'x', b: true }],
    ['obj big index key', { 3000000000: 1, 5: 2 }], ['obj pad none', { a: '\u20ac' }], ['obj pad', { ab: '\u20ac' }],
    ['obj undefined prop', { u: undefined }],
    ['obj nested', { type: 'sticky:connection', data: 'abc', nested: { x: [1, 2] } }],
    ['obj utf16 key', { '\u20ac': 1, 'caf\u00e9': 2 }],
    ['arr empty', []], ['arr mixed', [1, 'a', null]], ['arr doubles', [1.5, 2.5]], ['arr double int', [1.5, 2]],
    ['arr holey', [1, , 3]], ['arr with prop', Object.assign([7], { p: 1 })], ['arr undefined', [undefined]],
    ['arr sparse big', (() => { const a = []; a[1000] = 'x'; return a; })()],
    ['same obj twice', { a: shared, b: shared }], ['arr shared', arrShared], ['cycle', cyc],
    ['Buffer hi', Buffer.from('hi')], ['Buffer empty', Buffer.alloc(0)], ['Buffer pooled slice', pooled],
    ['Uint8Array', new Uint8Array([1, 2, 3])], ['Int8Array', new Int8Array([-1, 2])],
    ['Uint8ClampedArray', new Uint8ClampedArray([255, 0])], ['Int16Array', new Int16Array([-2, 300])],
    ['Uint16Array', new Uint16Array([65535])], ['Int32Array', new Int32Array([-5])],
    ['Uint32Array', new Uint32Array([4000000000])], ['Float32Array', new Float32Array([1.5, 0.1])],
    ['Float64Array', new Float64Array([Math.PI])], ['DataView', new DataView(new ArrayBuffer(3))],
    ['BigInt64Array', new BigInt64Array([-1n])], ['BigUint64Array', new BigUint64Array([2n ** 64n - 1n])],
    ['ArrayBuffer', new Uint8Array([9, 8, 7]).buffer],
    ['obj with Buffer', { type: 'sticky:connection', data: Buffer.from('GET / HTTP/1.1\r\n\r\n') }],
    ['Date 0', new Date(0)], ['Date NaN', new Date(NaN)], ['Date now', new Date(1700000000123)],
    ['RegExp', /ab/gi], ['RegExp flags', /x\/y/msuy],
    ['Map', new Map([['a', 1], [2, { b: 'c' }]])], ['Set', new Set([1, 'two', [3]])], ['Map empty', new Map()],
    ['BigInt 5', 5n], ['BigInt -5', -5n], ['BigInt 0', 0n], ['BigInt 2^64', 2n ** 64n], ['BigInt huge', -(3n ** 200n)],
    ['Number object', Object(5)], ['String object', Object('ab')], ['BigInt object', Object(5n)],
    ['Boolean true object', new Boolean(true)], ['Boolean false object', new Boolean(false)],
    ['TypeError', err], ['RangeError cause', errCause], ['Error', plainErr],
    ['deep', deep],
    ['adapter', { type: 2, uid: '59186b404b17233b', nsp: '/', source: '_sio_adapter' }],
  ];
};
