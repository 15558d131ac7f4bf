// Generates src/protocol.ts from protocol/schema.json (itself generated from
// the sidecar's msgspec Structs). Never edit the output by hand:
// `python3 build.py generate` rewrites it and `python3 build.py check` fails
// CI when it is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { compile } from 'json-schema-to-typescript';

const [schemaPath, outPath] = process.argv.slice(2);
const schema = JSON.parse(readFileSync(schemaPath, 'utf8'));

// Every $def becomes a named export; the root object only carries them.
const root = {
  title: 'ProtocolRoot',
  type: 'object',
  additionalProperties: false,
  properties: {},
  $defs: schema.$defs,
};
let types = await compile(root, 'ProtocolRoot', {
  bannerComment: '',
  unreachableDefinitions: true,
  additionalProperties: false,
  strictIndexSignatures: true,
  style: { singleQuote: true },
});
types = types
  .replace(/export interface ProtocolRoot \{\s*\}\n?/, '')
  .replace(/ \*( \n \*)? This interface was referenced by `ProtocolRoot`'s JSON-Schema\n \* via the `definition` "\w+"\.\n/g, '')
  .replace(/\/\*\*\n \*\/\n/g, '');

const typeName = (ref) => (ref.$ref ? ref.$ref.split('/').pop() : 'null');
const methodLines = Object.entries(schema['x-methods']).map(
  ([name, m]) => `  '${name}': { params: ${typeName(m.params)}; result: ${typeName(m.result)} };`,
);
const notificationLines = Object.entries(schema['x-notifications']).map(
  ([name, n]) => `  '${name}': ${typeName(n.params)};`,
);
const errorLines = Object.entries(schema['x-errors']).map(([name, e]) => `  ${name}: ${e.code},`);

const out = `// Generated from protocol/schema.json by scripts/generate-types.mjs. Do not edit.

export const PROTOCOL_VERSION = '${schema['x-protocol-version']}';

${types.trim()}

/** Every request method: its params and result types. */
export interface Methods {
${methodLines.join('\n')}
}

/** Notifications the sidecar sends. */
export interface Notifications {
${notificationLines.join('\n')}
}

/** JSON-RPC error codes the sidecar answers with. */
export const ErrorCode = {
${errorLines.join('\n')}
} as const;
`;
writeFileSync(outPath, out);
