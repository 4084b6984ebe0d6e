// Wire forms of one stream event per stream kind. Each is built once per
// event and broadcast to every live subscriber of that kind.
import type { StreamEvent } from '../../actors/events.js';

export const enum Kind {
  /** Phoenix Channels, serializer vsn 2.0.0 (arrays). */
  Phoenix2 = 0,
  /** Phoenix Channels, serializer vsn 1.0.0 (objects). */
  Phoenix1 = 1,
  /** Raw JSON WebSocket stream. */
  Raw = 2,
  /** Raw JSON stream of a context without message events (include_messages=false). */
  RawNoMessages = 3,
  /** Server-sent events. */
  Sse = 4,
}

export const KIND_LABEL = ['phoenix', 'phoenix', 'raw', 'raw', 'sse'] as const;

/** uWS topic of one conversation for one WebSocket kind. */
export const topicName = (kind: Kind, id: string) => `${kind}:${id}`;

export const PHOENIX_TOPIC_PREFIX = 'conversation:';
export const phoenixTopic = (id: string) => PHOENIX_TOPIC_PREFIX + id;

/** Does a subscriber of this kind get this event at all? */
export const wants = (kind: Kind, ev: StreamEvent) => kind !== Kind.RawNoMessages || ev.type !== 'message';

export function serialize(kind: Kind, ev: StreamEvent): string {
  switch (kind) {
    case Kind.Phoenix2:
      return `[null,null,${JSON.stringify(phoenixTopic(ev.id))},"${ev.type}",${ev.json}]`;
    case Kind.Phoenix1:
      return `{"topic":${JSON.stringify(phoenixTopic(ev.id))},"event":"${ev.type}","payload":${ev.json},"ref":null,"join_ref":null}`;
    case Kind.Raw:
    case Kind.RawNoMessages:
      return ev.json;
    case Kind.Sse:
      return ev.seq > 0 ? `id: ${ev.seq}\ndata: ${ev.json}\n\n` : `data: ${ev.json}\n\n`;
  }
}
