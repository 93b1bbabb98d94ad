// The part of k8s.io/apimachinery/pkg/fields (ParseSelector + RequiresExactMatch) that the API
// server's RequestInfo uses to name the object of a list/watch by `fieldSelector=metadata.name=x`.

/** Splits on commas not escaped by a backslash (fields.splitTerms). */
function splitTerms(selector: string): string[] {
  if (selector.length === 0) return [];
  const terms: string[] = [];
  let start = 0;
  let inSlash = false;
  for (let i = 0; i < selector.length; i++) {
    const c = selector[i];
    if (inSlash) inSlash = false;
    else if (c === '\\') inSlash = true;
    else if (c === ',') {
      terms.push(selector.slice(start, i));
      start = i + 1;
    }
  }
  terms.push(selector.slice(start));
  return terms;
}

const OPERATORS = ['!=', '==', '='] as const;

/** fields.splitTerm: the first operator found scanning left to right. */
function splitTerm(term: string): { lhs: string; op: string; rhs: string } | undefined {
  for (let i = 0; i < term.length; i++) {
    for (const op of OPERATORS) {
      if (term.startsWith(op, i)) return { lhs: term.slice(0, i), op, rhs: term.slice(i + op.length) };
    }
  }
  return undefined;
}

/** fields.UnescapeValue: `\\`, `\,`, `\=` are escapes; any other escape or a bare `,`/`=` is an error. */
function unescapeValue(s: string): string | undefined {
  let out = '';
  let inSlash = false;
  for (const c of s) {
    if (inSlash) {
      if (c !== '\\' && c !== ',' && c !== '=') return undefined;
      out += c;
      inSlash = false;
      continue;
    }
    if (c === '\\') inSlash = true;
    else if (c === ',' || c === '=') return undefined;
    else out += c;
  }
  return inSlash ? undefined : out;
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * The value `field` must equal for `selector` to match (`metadata.name=x` or `==`, possibly among
 * other terms), or undefined when the selector does not require one or does not parse.
 */
export function requiresExactMatch(selector: string, field: string): string | undefined {
  const parts = splitTerms(selector).sort(compareBytes);
  const terms: { field: string; op: string; value: string }[] = [];
  for (const part of parts) {
    if (part === '') continue;
    const t = splitTerm(part);
    if (t === undefined) return undefined;
    const value = unescapeValue(t.rhs);
    if (value === undefined) return undefined;
    terms.push({ field: t.lhs, op: t.op, value });
  }
  for (const t of terms) {
    if (t.op !== '!=' && t.field === field) return t.value;
  }
  return undefined;
}
