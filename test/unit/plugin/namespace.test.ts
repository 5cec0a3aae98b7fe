// The user → namespace mapping shared by `migrate --to-plugin` and `serve`: every name it makes
// passes the contract's pattern, common ids come through unchanged, and no two users share a
// namespace (userForNamespace undoes it).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_NAMESPACE_TEMPLATE,
  NAMESPACE_NAME_PATTERN,
  escapeUserId,
  namespaceFor,
  namespaceKindOf,
  namespaceTemplateProblem,
  userForNamespace,
} from '../../../src/plugin-namespace.js';

describe('namespaceFor', () => {
  test('common ids are unchanged; other characters are _HH per UTF-8 byte', () => {
    const cases: [string, string][] = [
      ['user_1', 'workspace:user_1'],
      ['550e8400-e29b-41d4-a716-446655440000', 'workspace:550e8400-e29b-41d4-a716-446655440000'],
      ['alice@example.com', 'workspace:alice_40example.com'],
      ['josé', 'workspace:jos_C3_A9'],
      ['a b/c', 'workspace:a_20b_2Fc'],
      ['ID_12', 'workspace:ID_5F12'],
      ['x_5', 'workspace:x_5'],
      ['slack:U01', 'workspace:slack:U01'],
      ['😀', 'workspace:_F0_9F_98_80'],
    ];
    for (const [user, name] of cases) {
      assert.equal(namespaceFor(DEFAULT_NAMESPACE_TEMPLATE, user), name, user);
      assert.match(name, NAMESPACE_NAME_PATTERN);
      assert.equal(userForNamespace(DEFAULT_NAMESPACE_TEMPLATE, name), user);
    }
  });

  test('one-to-one: tricky ids round-trip and never collide', () => {
    const users = ['_', '__', '_5F', '_5f', '_AB', '_A', 'A_', '_AB_', '_ ', '_\u00e9', '%41', '_41', 'A', '_0', '_00', '\u0000', 'a\nb', 'ü', 'u\u0308'];
    const names = new Map<string, string>();
    for (const u of users) {
      const n = namespaceFor('team:acme:{user}', u);
      assert.match(n, NAMESPACE_NAME_PATTERN, JSON.stringify(u));
      assert.equal(userForNamespace('team:acme:{user}', n), u, JSON.stringify(u));
      assert.equal(names.get(n), undefined, `${JSON.stringify(u)} and ${JSON.stringify(names.get(n))} share ${n}`);
      names.set(n, u);
    }
  });

  test('bad templates and names are refused with the reason', () => {
    assert.match(namespaceTemplateProblem('workspace:') ?? '', /must contain \{user\} exactly once/);
    assert.match(namespaceTemplateProblem('{user}:{user}') ?? '', /exactly once/);
    assert.match(namespaceTemplateProblem('Workspace:{user}') ?? '', /does not give a valid namespace name/);
    assert.match(namespaceTemplateProblem('{user}') ?? '', /does not give a valid namespace name/);
    assert.equal(namespaceTemplateProblem('org:{user}-shared'), undefined);
    assert.throws(() => namespaceFor(DEFAULT_NAMESPACE_TEMPLATE, ''), /does not match required pattern/);
    assert.throws(() => namespaceFor(DEFAULT_NAMESPACE_TEMPLATE, 'x'.repeat(300)), /exceeds 256 chars/);
    assert.equal(escapeUserId('x'.repeat(246)).length, 246);
    assert.equal(namespaceFor(DEFAULT_NAMESPACE_TEMPLATE, 'x'.repeat(246)).length, 256);
  });

  test('not a name of the template: undefined', () => {
    assert.equal(userForNamespace(DEFAULT_NAMESPACE_TEMPLATE, 'team:user_1'), undefined);
    assert.equal(userForNamespace(DEFAULT_NAMESPACE_TEMPLATE, 'workspace:'), undefined);
    // A name the escape never makes (it writes "_5" as "_5") belongs to no user.
    assert.equal(userForNamespace(DEFAULT_NAMESPACE_TEMPLATE, 'workspace:_5FAB'), '_AB');
    assert.equal(userForNamespace(DEFAULT_NAMESPACE_TEMPLATE, 'workspace:_5F5'), undefined, 'not how "_5" is escaped');
  });

  test('kind from the prefix, as workspace-server derives it', () => {
    assert.equal(namespaceKindOf('workspace:a'), 'workspace');
    assert.equal(namespaceKindOf('team:a'), 'team');
    assert.equal(namespaceKindOf('org:a'), 'org');
    assert.equal(namespaceKindOf('custom:a'), 'custom');
    assert.equal(namespaceKindOf('tenant:a'), 'custom');
  });
});
