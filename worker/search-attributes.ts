import proto from '@temporalio/proto';
import type { NativeConnection } from '@temporalio/worker';
import { SEARCH_ATTRIBUTE_REGISTRATIONS } from '../contracts/index.js';

const INDEXED = {
  Keyword: proto.temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  Int: proto.temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
};

/**
 * Checks that envrun's custom search attributes exist in the namespace and registers the missing ones
 * through the operator API. Where that is not allowed (e.g. Temporal Cloud), the error says how to add them.
 */
export async function ensureSearchAttributes(connection: NativeConnection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const custom = existing.customAttributes ?? {};
  const missing = SEARCH_ATTRIBUTE_REGISTRATIONS.filter((a) => !(a.name in custom));
  if (missing.length === 0) return [];
  try {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((a) => [a.name, INDEXED[a.type]])),
    });
  } catch (err) {
    const names = missing.map((a) => a.name).join(', ');
    const cmds = missing
      .map(
        (a) => `temporal operator search-attribute create --namespace ${namespace} --name ${a.name} --type ${a.type}`,
      )
      .join('\n  ');
    throw new Error(
      `search attributes missing in namespace ${namespace} (${names}) and could not be registered: ${(err as Error).message}\nRegister them with:\n  ${cmds}`,
    );
  }
  return missing.map((a) => a.name);
}
