/** Progress and results lines of the bench, on stderr (stdout lists the written files). */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Parses one wsdrain log line (pino JSON); undefined when it is not JSON. */
export function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}
