// JSON logs, one object a line (SPEC §7): {ts, level, type, msg, ...fields}.
type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold = ORDER.info;

export function setLogLevel(level: Level): void {
  threshold = ORDER[level];
}

export function logEnabled(level: Level): boolean {
  return ORDER[level] >= threshold;
}

export function log(level: Level, type: string, msg: string, fields: Record<string, unknown> = {}): void {
  if (ORDER[level] < threshold) return;
  const line = JSON.stringify({ ts: new Date().toISOString(), level, type, msg, ...fields });
  process.stdout.write(line + '\n');
}
