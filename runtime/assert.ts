// Assertions stay on in production. A failed one is a programmer error: it
// throws InvariantError, which stops the group (worker) that hit it, never
// the whole process.

export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantError';
  }
}

export function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new InvariantError(message);
}
