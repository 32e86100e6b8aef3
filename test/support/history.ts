// `temporal workflow show --output json` keeps payloads base64-encoded: a search for a secret must look at
// the decoded payloads too, or it can never find anything.
export function historyText(json: string): string {
  const decoded: string[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (!node || typeof node !== 'object') return;
    const obj = node as Record<string, unknown>;
    if (typeof obj.data === 'string' && obj.metadata && typeof obj.metadata === 'object') {
      decoded.push(Buffer.from(obj.data, 'base64').toString('utf8'));
    }
    Object.values(obj).forEach(walk);
  };
  walk(JSON.parse(json));
  return `${json}\n${decoded.join('\n')}`;
}

/**
 * The same for a history the client fetched: its messages serialize as the CLI's JSON does (payload data
 * base64), so a search must decode them the same way.
 */
export function decodedHistory(history: unknown): string {
  return historyText(JSON.stringify(history));
}
