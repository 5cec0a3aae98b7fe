// readMetadata decides what jsonb will hold for a source metadata value: the source text
// itself wherever PostgreSQL accepts it, so numbers are never rounded on the way. Each case
// is checked against the JSON text written out, and (in the e2e suite) against real jsonb.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { categoryOf, importanceOf, metadataForSqlite, readMetadata } from '../../../src/source/metadata.js';

describe('readMetadata', () => {
  test('a JSON object goes to jsonb as its own text: big integers, long decimals and 1E400 untouched', () => {
    for (const text of [
      '{"order_id": 12345678901234567890}',
      '{"shopify_id": 9007199254740993}',
      '{"price": 0.1000000000000000055511151231257827}',
      '{"e": 1E400}',
      '{"nested": {"ids": [18446744073709551617, -0.0, 1e-400]}}',
    ]) {
      const md = readMetadata(text);
      assert.equal(md.json, text);
      assert.equal(md.warning, undefined);
      assert.equal(md.duplicateKeys, 0);
    }
  });

  test('what JSON.parse would have written differs, which is the point', () => {
    const md = readMetadata('{"order_id": 12345678901234567890}');
    assert.notEqual(JSON.stringify(md.fields), '{"order_id":12345678901234567890}');
  });

  test('duplicate keys are counted at every depth (PostgreSQL keeps the last one, as JSON.parse does)', () => {
    const md = readMetadata('{"a": 1, "b": {"x": 1, "x": 2, "x": 3}, "a": 2}');
    assert.equal(md.duplicateKeys, 3);
    assert.deepEqual(md.fields, { a: 2, b: { x: 3 } });
    assert.equal(md.warning, undefined);
    assert.equal(readMetadata('{"k": "a:b:c", "l": ["x:y"]}').duplicateKeys, 0, 'colons inside strings are not keys');
    assert.equal(readMetadata('{"k\\"": 1, "k": 2}').duplicateKeys, 0, 'an escaped quote does not end the key');
  });

  test('scalars and arrays are wrapped as {value}, keeping their text', () => {
    assert.equal(readMetadata('[1, 2]').json, '{"value":[1, 2]}');
    assert.equal(readMetadata('12345678901234567890').json, '{"value":12345678901234567890}');
    assert.equal(readMetadata('"just text"').json, '{"value":"just text"}');
    assert.deepEqual(readMetadata('"just text"').fields, { value: 'just text' });
    assert.equal(readMetadata(42).json, '{"value":42}');
  });

  test('NULL, empty and JSON null are {}', () => {
    for (const v of [null, undefined, '', '   ', 'null']) {
      const md = readMetadata(v);
      assert.equal(md.json, '{}');
      assert.deepEqual(md.fields, {});
    }
  });

  test('invalid JSON and what jsonb rejects are kept as {raw} with a warning', () => {
    const bad = readMetadata('{"truncated": ');
    assert.equal(bad.json, JSON.stringify({ raw: '{"truncated": ' }));
    assert.match(bad.warning!, /not valid JSON/);
    for (const [text, why] of [
      ['{"a": "nul\\u0000here"}', /\\u0000/],
      ['{"a": "\\ud800"}', /unpaired surrogate/],
      ['{"a": "\\udc00x"}', /unpaired surrogate/],
      ['{"a": "\\ud800\\u0041"}', /unpaired surrogate/],
      ['{"a": 1e1001}', /exponent/],
      ['{"a": 1E-5000}', /exponent/],
    ] as const) {
      const md = readMetadata(text);
      assert.equal(md.json, JSON.stringify({ raw: text }), text);
      assert.match(md.warning!, why, text);
    }
    // A proper surrogate pair and other escapes are fine.
    assert.equal(readMetadata('{"emoji": "\\ud83d\\ude00", "tab": "\\t", "e": 1e1000}').warning, undefined);
  });

  test('a blob holding UTF-8 JSON reads like text', () => {
    assert.equal(readMetadata(Buffer.from('{"n": 12345678901234567890}')).json, '{"n": 12345678901234567890}');
  });
});

describe('metadataForSqlite', () => {
  test('PostgreSQL text goes back as it is; a {raw} the migration made goes back as the raw text', () => {
    assert.equal(metadataForSqlite('{"order_id": 12345678901234567891}'), '{"order_id": 12345678901234567891}');
    assert.equal(metadataForSqlite('{"raw": "{\\"truncated\\": "}'), '{"truncated": ');
    assert.equal(metadataForSqlite('{"raw": "{\\"a\\": 1e1001}"}'), '{"a": 1e1001}');
    // A {raw} holding valid JSON was the app's own object: it stays an object.
    assert.equal(metadataForSqlite('{"raw": "{\\"a\\": 1}"}'), '{"raw": "{\\"a\\": 1}"}');
  });
});

describe('row rules', () => {
  test('importance and category', () => {
    assert.equal(importanceOf({ importance: 'medium' }), 0.6);
    assert.equal(importanceOf({ importance_score: 0.25 }), 0.25);
    assert.equal(importanceOf({ importance: Infinity }), 1.0);
    assert.equal(categoryOf({ category: 'x'.repeat(150) })!.length, 100);
    assert.equal(categoryOf({ category: '' }), null);
  });
});
