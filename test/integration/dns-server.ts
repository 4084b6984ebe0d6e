// A tiny authoritative DNS server on a free loopback UDP port, so discovery
// tests can change a name's A records between lookups. It answers A queries
// for names set with setA (TTL 0, so the resolver's cache never hides a
// change), NOERROR with no answers for other types of those names (c-ares may
// ask AAAA), NXDOMAIN for unknown names and FORMERR for what it cannot parse.
import dgram from 'node:dgram';

export interface DnsServer {
  port: number;
  /** Queries received so far, parsable or not. */
  readonly queries: number;
  /** Sets a name's A records; [] keeps the name known but with no addresses. */
  setA(name: string, ips: string[]): void;
  /** Forgets a name: lookups of it get NXDOMAIN again. */
  unset(name: string): void;
  stop(): Promise<void>;
}

const TYPE_A = 1;
const CLASS_IN = 1;
const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
const HEADER_BYTES = 12;
// Without EDNS a UDP answer must fit in 512 bytes; this server never truncates.
const MAX_UDP_BYTES = 512;
const ANSWER_BYTES = 16; // name pointer, type, class, TTL, rdlength, 4 address bytes

const canonical = (name: string): string => name.toLowerCase().replace(/\.$/, '');

interface Question {
  name: string;
  type: number;
  /** Offset just past the question: the header and question are echoed back verbatim. */
  end: number;
}

/** The one question of a standard query, or null if the packet is not one this server can answer. */
function parseQuestion(msg: Buffer): Question | null {
  if (msg.length < HEADER_BYTES) return null;
  const opcode = (msg[2] >> 3) & 0xf;
  if (opcode !== 0 || msg.readUInt16BE(4) !== 1) return null;
  const labels: string[] = [];
  let at = HEADER_BYTES;
  for (;;) {
    if (at >= msg.length) return null;
    const len = msg[at];
    // The question is the first name in the packet, so it has nothing to point back to.
    if (len & 0xc0) return null;
    at += 1;
    if (len === 0) break;
    if (at + len > msg.length) return null;
    labels.push(msg.toString('latin1', at, at + len));
    at += len;
  }
  if (at + 4 > msg.length) return null;
  return { name: canonical(labels.join('.')), type: msg.readUInt16BE(at), end: at + 4 };
}

function ipBytes(ip: string): number[] {
  const octets = ip.split('.').map(Number);
  if (octets.length !== 4 || !octets.every((o) => Number.isInteger(o) && o >= 0 && o <= 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return octets;
}

/** The reply to msg given the configured records, or null to stay silent (no readable header). */
function reply(msg: Buffer, records: Map<string, number[][]>): Buffer | null {
  if (msg.length < HEADER_BYTES) return null;
  const q = parseQuestion(msg);
  // QR=1, opcode and RD copied from the query, AA=1.
  const flags1 = 0x80 | (msg[2] & 0x79) | 0x04;
  if (q === null) {
    const header = Buffer.alloc(HEADER_BYTES);
    msg.copy(header, 0, 0, 2);
    header[2] = flags1;
    header[3] = RCODE_FORMERR;
    return header;
  }
  const ips = records.get(q.name);
  const answers = ips !== undefined && q.type === TYPE_A ? ips : [];
  const out = Buffer.alloc(q.end + answers.length * ANSWER_BYTES);
  msg.copy(out, 0, 0, q.end);
  out[2] = flags1;
  out[3] = ips === undefined ? RCODE_NXDOMAIN : 0;
  out.writeUInt16BE(answers.length, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10); // the query's EDNS OPT record, if any, is not echoed
  let at = q.end;
  for (const ip of answers) {
    out.writeUInt16BE(0xc000 | HEADER_BYTES, at); // the question's name
    out.writeUInt16BE(TYPE_A, at + 2);
    out.writeUInt16BE(CLASS_IN, at + 4);
    out.writeUInt32BE(0, at + 6);
    out.writeUInt16BE(4, at + 10);
    Buffer.from(ip).copy(out, at + 12);
    at += ANSWER_BYTES;
  }
  return out;
}

export async function startDnsServer(): Promise<DnsServer> {
  const records = new Map<string, number[][]>();
  const socket = dgram.createSocket('udp4');
  let queries = 0;
  socket.on('message', (msg, from) => {
    queries++;
    const out = reply(msg, records);
    if (out !== null) socket.send(out, from.port, from.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return {
    port: socket.address().port,
    get queries() {
      return queries;
    },
    setA(name, ips) {
      const key = canonical(name);
      const questionBytes = key.length + 2 + 4;
      if (HEADER_BYTES + questionBytes + ips.length * ANSWER_BYTES > MAX_UDP_BYTES) {
        throw new Error(`${ips.length} A records for ${name} do not fit one UDP answer`);
      }
      records.set(key, ips.map(ipBytes));
    },
    unset(name) {
      records.delete(canonical(name));
    },
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
