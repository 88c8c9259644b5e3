/**
 * Element lines and IR elements. A line is an element's canonical nft text
 * (`10.96.0.10 . tcp . 80 . 0 : 10.244.1.10 . 8080`), the form the desired state keeps and
 * transactions carry; the IR element is the libnftables JSON shape the tracer, the listing
 * parser and the in-memory backend work on. The set's declaration tells how to read a line.
 */
import type { Elem, Expr, NftSet, Verdict } from './ir.js';
import { NftError } from './errors.js';
import { renderElem } from './render.js';

/** The line of an IR element. */
export function elemLine(e: Elem): string {
  return renderElem(e);
}

/** The key part of a line (a map element's line without ` : data`). */
export function lineKey(line: string): string {
  const colon = line.indexOf(' : ');
  return colon < 0 ? line : line.slice(0, colon);
}

/** Every line of line blocks (entries holding several lines joined by `\n`). */
export function* eachLine(blocks: Iterable<string>): Generator<string> {
  for (const b of blocks) {
    if (!b.includes('\n')) {
      if (b) yield b;
      continue;
    }
    for (const l of b.split('\n')) if (l) yield l;
  }
}

type FieldKind = 'number' | 'name' | 'address';

const KIND: Record<string, FieldKind> = {
  ipv4_addr: 'address',
  ipv6_addr: 'address',
  inet_proto: 'name',
  inet_service: 'number',
  integer: 'number',
  mark: 'number',
};

function typeNames(t: string | string[]): string[] {
  return Array.isArray(t) ? t : t.split(' . ');
}

function field(kind: FieldKind | undefined, text: string, line: string): Expr {
  const bad = () => NftError.invalid(`cannot read element ${JSON.stringify(line)}`);
  if (kind === undefined) throw bad();
  const slash = text.indexOf('/');
  if (slash >= 0 && kind === 'address') {
    const len = Number(text.slice(slash + 1));
    if (!Number.isInteger(len)) throw bad();
    return { prefix: { addr: text.slice(0, slash), len } };
  }
  const dash = text.indexOf('-');
  if (dash > 0 && kind !== 'name') {
    const a = text.slice(0, dash);
    const b = text.slice(dash + 1);
    return kind === 'number' ? { range: [Number(a), Number(b)] } : { range: [a, b] };
  }
  if (kind === 'number') {
    if (!/^\d+$/.test(text)) throw bad();
    return Number(text);
  }
  return text;
}

function verdict(text: string, line: string): Verdict {
  const [word, target] = text.split(' ');
  switch (word) {
    case 'goto':
    case 'jump':
      if (!target) break;
      return word === 'goto' ? { goto: { target } } : { jump: { target } };
    case 'drop':
      return { drop: null };
    case 'accept':
      return { accept: null };
    case 'return':
      return { return: null };
    case 'continue':
      return { continue: null };
  }
  throw NftError.invalid(`cannot read the verdict of element ${JSON.stringify(line)}`);
}

function fields(types: string[], text: string, line: string): Expr {
  const parts = text.split(' . ');
  if (parts.length !== types.length)
    throw NftError.invalid(`element ${JSON.stringify(line)} does not fit its set`);
  const vals = parts.map((p, i) => field(KIND[types[i]!], p, line));
  return vals.length === 1 ? vals[0]! : { concat: vals };
}

/** The IR element of a line of the set declared by `def`. */
export function lineElem(def: Pick<NftSet, 'type' | 'map'>, line: string): Elem {
  const colon = line.indexOf(' : ');
  const keyText = colon < 0 ? line : line.slice(0, colon);
  const key = fields(typeNames(def.type), keyText, line);
  if (def.map === undefined) {
    if (colon >= 0) throw NftError.invalid(`element ${JSON.stringify(line)} has data, but its set is no map`);
    return key;
  }
  if (colon < 0) throw NftError.invalid(`element ${JSON.stringify(line)} of a map has no data`);
  const dataText = line.slice(colon + 3);
  const data = def.map === 'verdict' ? verdict(dataText, line) : fields(typeNames(def.map), dataText, line);
  return [key, data];
}

/** The IR key of a line (a full line or only its key part). */
export function lineKeyExpr(def: Pick<NftSet, 'type'>, line: string): Expr {
  return fields(typeNames(def.type), lineKey(line), line);
}
