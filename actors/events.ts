// Stream events (SPEC §5): JSON texts built once per committed change and
// sent as they are to every subscriber of every stream kind.

/** One event of one conversation; `seq` is 0 for events that are not a message. */
export interface StreamEvent {
  id: string;
  seq: number;
  type: EventType;
  json: string;
}

/** 'head' is internal: a worker's periodic "this conversation is at seq N", never sent to clients. */
export type EventType = 'message' | 'tombstone' | 'gap' | 'context' | 'compaction' | 'head';

/** From a stored message record `{"seq":S,<members>,"token_count":…,"inserted_at":…}`. */
export function messageEvent(id: string, recordText: string, version: number): StreamEvent {
  const comma = recordText.indexOf(',');
  const seq = Number(recordText.slice(7, comma));
  return {
    id,
    seq,
    type: 'message',
    json: `{"type":"message","seq":${seq},"version":${version},"message":{${recordText.slice(comma + 1)}}`,
  };
}

/** The newest seq of a streamed conversation, announced so a lost final event is noticed (gateway/streams/hub.ts). */
export const headEvent = (id: string, seq: number): StreamEvent => ({ id, seq, type: 'head', json: '' });

export const tombstoneEvent = (id: string): StreamEvent => ({ id, seq: 0, type: 'tombstone', json: '{"type":"tombstone"}' });

export const gapEvent = (id: string, expected: number, actual: number): StreamEvent => ({
  id,
  seq: 0,
  type: 'gap',
  json: `{"type":"gap","expected":${expected},"actual":${actual}}`,
});

/** After each change to a context; used_tokens = tokens of the window through its policy, as a window read gives it. */
export const contextEvent = (id: string, version: number, usedTokens: number, needsCompaction: boolean): StreamEvent => ({
  id,
  seq: 0,
  type: 'context',
  json: `{"type":"context","version":${version},"used_tokens":${usedTokens},"needs_compaction":${needsCompaction}}`,
});

export const compactionEvent = (id: string, version: number, fromSeq: number, toSeq: number): StreamEvent => ({
  id,
  seq: 0,
  type: 'compaction',
  json: `{"type":"compaction","version":${version},"range":{"from_seq":${fromSeq},"to_seq":${toSeq}}}`,
});
