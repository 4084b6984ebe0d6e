// Reply kinds a worker sends back with a JSON body; the gateway maps them to
// HTTP (Error bodies are WireError JSON, mapped by gateway/http-errors.ts).
import type { ApplyResult } from '../actors/conversation.js';
import { contextJson, recordJson } from '../actors/conversation.js';
import { toWire } from '../actors/errors.js';

export const enum ReplyKind {
  Error = 0,
  Ok = 1,
  Created = 2,
  NoContent = 3,
  /** A page partly below the hot tier: `{"cold":[lo,hi],"hot":[…]}` (the gateway reads the cold part from the archive). */
  Partial = 4,
}

export interface Reply {
  kind: ReplyKind;
  body: string;
}

export function errorReply(err: unknown): Reply {
  return { kind: ReplyKind.Error, body: JSON.stringify(toWire(err)) };
}

export function applyReply(res: ApplyResult): Reply {
  switch (res.kind) {
    case 'record':
      return { kind: ReplyKind.Ok, body: res.asContext ? contextJson(res.record) : recordJson(res.record) };
    case 'appended': {
      const est = res.tokenEstimate === null ? '' : `,"token_estimate":${res.tokenEstimate}`;
      const dup = res.duplicate ? ',"duplicate":true' : '';
      return {
        kind: ReplyKind.Created,
        body: `{"seq":${res.seq},"version":${res.version},"token_count":${res.tokenCount}${est}${dup}}`,
      };
    }
    case 'compacted':
      return { kind: ReplyKind.Ok, body: `{"version":${res.version}}` };
    case 'archived':
      return { kind: ReplyKind.Ok, body: `{"archived_seq":${res.archivedSeq},"trimmed_seq":${res.trimmedSeq}}` };
    case 'deleted':
      return { kind: ReplyKind.NoContent, body: '' };
    case 'error':
      return errorReply(res.error);
  }
}

/** `{"messages":[…]}` from stored message record texts, without re-encoding them. */
export function messagesBody(records: string[]): string {
  return '{"messages":[' + records.join(',') + ']}';
}
