// AST → ShellFacts. Visits every statement of the parsed line (lists, pipelines, subshells,
// groups, compound commands, function bodies, command/process substitutions at any depth, also
// inside words, assignments, redirection targets and here-documents) and turns every simple
// command into one ShellCommand; then unwraps wrappers (sudo, env, bash -c '…', find -exec, …)
// recursively, emitting the wrapper and each wrapped command.

import { PortcullisError, type ShellCommand, type ShellStdin } from '../types.js';
import {
  OPS,
  nodeType,
  parseShell,
  posOf,
  walk,
  type BinaryCmd,
  type Block,
  type CallExpr,
  type CmdSubst,
  type DeclClause,
  type FuncDecl,
  type LineCol,
  type Lit,
  type Node,
  type ParamExp,
  type ProcSubst,
  type Redirect,
  type Stmt,
  type Subshell,
  type TimeClause,
} from './ast.js';
import { DYNAMIC, expandWord, unBackquote, unescapeHeredoc, wordField, wordLiteral, type Field } from './words.js';
import { unwrap } from './wrappers.js';

/** Wrappers and nested command strings unwrapped inside one another, at most. */
export const MAX_NESTING = 32;
/** Statements nested inside one another (substitutions, subshells, blocks), at most. */
export const MAX_DEPTH = 200;
/** Simple commands in one line, at most. */
export const MAX_COMMANDS = 10_000;
/** Argument fields (after brace expansion) in one line, at most. */
export const MAX_FIELDS = 100_000;

interface StdinInfo {
  kind: ShellStdin | null;
  /** Here-document / here-string content (literal or dynamic), for a shell reading its script from stdin. */
  content: Field | null;
}

interface Ctx {
  context: string;
  wrappers: string[];
  stdin: StdinInfo;
  pipedFrom: string | null;
  /** Redirections in force: the command's own first, then those of enclosing compounds. */
  redirects: { op: string; target: string }[];
  /** Position in the top-level line of the word that led into a nested command string. */
  origin: LineCol | null;
  nesting: number;
  /** Backquote substitutions enclosing this text (single-quoted values need unescaping per level). */
  backquotes: number;
}

const NO_STDIN: StdinInfo = { kind: null, content: null };

/** Output of visiting: the program whose stdout a following pipe reads (null: dynamic), undefined: none. */
type Out = string | null | undefined;

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Short flags as letters, long flags without dashes (value after `=` dropped); stops at `--`. */
export function parseFlags(args: readonly string[], end: number = args.length): string[] {
  const out: string[] = [];
  const add = (f: string): void => {
    if (!out.includes(f)) out.push(f);
  };
  for (let i = 0; i < end && i < args.length; i++) {
    const a = args[i]!;
    if (a === DYNAMIC) continue;
    if (a === '--') break;
    if (a.startsWith('--')) {
      const name = a.slice(2).split('=')[0]!;
      if (name !== '') add(name);
    } else if (a.length > 1 && a[0] === '-') {
      // Only letters and digits: `-qO-` gives q, O; `-I{}` gives I (attached values are not flags).
      for (const ch of a.slice(1)) if (/[A-Za-z0-9]/.test(ch)) add(ch);
    }
  }
  return out;
}

function heredocContent(r: Redirect, bq: number): Field {
  const delim = r.Word;
  const pos = r.Hdoc !== null ? posOf(r.Hdoc) : posOf(r);
  // A quoted delimiter (any quoting or escaping) makes the body literal text.
  const quoted =
    delim !== null && delim.Parts.some((p: Node) => nodeType(p) !== 'Lit' || (p as Lit).Value.includes('\\'));
  const parts = r.Hdoc?.Parts ?? [];
  let raw = '';
  for (const p of parts) {
    if (nodeType(p) !== 'Lit') return { value: DYNAMIC, literal: false, glob: false, pos };
    raw += (p as Lit).Value;
  }
  return { value: quoted ? unBackquote(raw, bq) : unescapeHeredoc(raw), literal: true, glob: false, pos };
}

function isPromptExpansion(pe: ParamExp): boolean {
  const exp = pe.Exp;
  if (exp === null || exp.Op !== OPS.paramAt || exp.Word === null) return false;
  // Only P runs commands; a non-literal operator word is refused as if it were P.
  const op = wordLiteral(exp.Word);
  return op === null || op === 'P';
}

/** A backquote that is not escaped by a backslash (bash ends a `…` substitution at the first one). */
function hasUnescapedBackquote(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    if (v[i] === '\\') i++;
    else if (v[i] === '`') return true;
  }
  return false;
}

/**
 * Fails closed where the parser's reading of a `…` substitution can differ from bash's. Bash finds
 * the end of `…` first (the first unescaped backquote, even inside quotes) and removes one level of
 * backslashes per nesting level before parsing; the parser keeps a backquote inside single quotes
 * as text and follows backslashes only one level deep. Checked against bash, those are the two
 * places where a command could hide; both are refused rather than guessed.
 */
function checkBackquoted(cs: CmdSubst, depth: number, origin: LineCol | null): void {
  for (const st of cs.Stmts) {
    walk(st, (n: Node) => {
      const t = nodeType(n);
      if (t === 'CmdSubst' && (n as CmdSubst).Backquotes) {
        checkBackquoted(n as CmdSubst, depth + 1, origin);
        return false;
      }
      if (t !== 'Lit' && t !== 'SglQuoted') return true;
      const v = (n as Lit).Value;
      let why: string | null = null;
      if (hasUnescapedBackquote(v)) why = 'a backquote inside quotes ends a `…` substitution in bash';
      else if (depth >= 2 && (v.includes('\\') || v.includes('`'))) why = 'backslashes inside `…` nested two deep';
      if (why !== null) {
        const at = origin ?? posOf(n);
        throw new PortcullisError('shell_parse_error', `command line: ${at.line}:${at.column}: ${why}, and the parser would read it differently: write $(…) instead`, {
          line: at.line,
          column: at.column,
          reason: 'backquotes',
        });
      }
      return true;
    });
  }
}

export class Extractor {
  readonly commands: ShellCommand[] = [];
  private depth = 0;
  private fieldCount = 0;

  private tooComplex(what: string, at: LineCol | null): never {
    const where = at ?? { line: 1, column: 1 };
    throw new PortcullisError('shell_parse_error', `command line too complex: ${what}`, {
      line: where.line,
      column: where.column,
      reason: 'too-complex',
    });
  }

  /** One simple command, with where it stands (stdin, pipe, redirections, wrappers) from `ctx`. */
  private emit(ctx: Ctx, program: string | null, args: string[], flags: string[], dynamic: boolean): void {
    this.push(
      {
        program,
        args,
        flags,
        dynamic,
        stdin: ctx.stdin.kind,
        pipedFrom: ctx.pipedFrom,
        redirects: ctx.redirects.map((r) => ({ ...r })),
        wrappers: [...ctx.wrappers],
        context: ctx.context,
      },
      ctx,
    );
  }

  private push(cmd: ShellCommand, ctx: Ctx): void {
    if (this.commands.length >= MAX_COMMANDS) this.tooComplex(`more than ${MAX_COMMANDS} commands`, ctx.origin);
    this.commands.push(cmd);
  }

  visitStmts(stmts: readonly Stmt[], ctx: Ctx): Out {
    let out: Out;
    for (const st of stmts) {
      const o = this.visitStmt(st, ctx);
      if (o !== undefined) out = o;
    }
    return out;
  }

  visitStmt(stmt: Stmt, ctx: Ctx): Out {
    if (++this.depth > MAX_DEPTH) this.tooComplex(`statements nested deeper than ${MAX_DEPTH}`, ctx.origin ?? posOf(stmt));
    try {
      return this.visitStmtInner(stmt, ctx);
    } finally {
      this.depth--;
    }
  }

  private visitStmtInner(stmt: Stmt, ctx: Ctx): Out {
    const own = this.redirections(stmt.Redirs, ctx.backquotes);
    const inner: Ctx = {
      ...ctx,
      stdin: own.stdin ?? ctx.stdin,
      // Input from a file or here-document replaces the pipe.
      pipedFrom: own.stdin !== null ? null : ctx.pipedFrom,
      redirects: own.redirects.length > 0 ? [...own.redirects, ...ctx.redirects] : ctx.redirects,
    };
    const cmd = stmt.Cmd;
    let out: Out;
    if (cmd === null) {
      if (own.redirects.length > 0) this.redirectOnly(inner);
    } else {
      switch (nodeType(cmd)) {
        case 'CallExpr':
          out = this.callExpr(cmd as CallExpr, ctx, inner, own.redirects.length > 0);
          break;
        case 'BinaryCmd': {
          const b = cmd as BinaryCmd;
          const op = OPS.binary.get(b.Op);
          if (op === undefined) throw new PortcullisError('shell_parse_error', `unknown binary operator token ${b.Op}`, { ...posOf(b) });
          if (op === '|' || op === '|&') {
            const left = this.visitStmt(b.X, inner);
            out = this.visitStmt(b.Y, { ...inner, stdin: { kind: 'pipe', content: null }, pipedFrom: left ?? null });
          } else {
            this.visitStmt(b.X, inner);
            out = this.visitStmt(b.Y, inner);
          }
          break;
        }
        case 'Subshell':
          out = this.visitStmts((cmd as Subshell).Stmts, { ...inner, context: 'subshell' });
          break;
        case 'Block':
          out = this.visitStmts((cmd as Block).Stmts, inner);
          break;
        case 'FuncDecl':
          // The body runs when the function is called, with the caller's stdin and redirections.
          this.visitStmt((cmd as FuncDecl).Body, {
            ...ctx,
            context: 'function',
            stdin: NO_STDIN,
            pipedFrom: null,
            redirects: [],
          });
          out = undefined;
          break;
        case 'TimeClause': {
          // The `time` keyword, emitted like the time program it stands for, then what it times.
          const t = cmd as TimeClause;
          const args = t.PosixFormat ? ['-p'] : [];
          this.emit(inner, 'time', args, parseFlags(args), false);
          out = 'time';
          if (t.Stmt !== null) out = this.visitStmt(t.Stmt, this.nest(inner, 'time', posOf(t))) ?? out;
          break;
        }
        case 'DeclClause':
          out = this.declClause(cmd as DeclClause, ctx, inner);
          break;
        default:
          // if/while/until/for/case/select, [[ ]], (( )), let, coproc, ...: visit every statement
          // and substitution they hold.
          out = this.walk(cmd, inner, null);
      }
    }
    // Substitutions in redirection targets and here-document bodies run in this shell.
    for (const r of stmt.Redirs) this.walk(r, ctx, out ?? null);
    return out;
  }

  /**
   * Visits the statements and substitutions inside `node` (not `node`'s own simple command).
   * `writer` is the program writing into a `>(…)` found here.
   */
  private walk(node: Node, ctx: Ctx, writer: string | null): Out {
    let out: Out;
    walk(node, (n: Node) => {
      const t = nodeType(n);
      if (t === 'ParamExp') {
        if (isPromptExpansion(n as ParamExp)) this.visitNested(n, t, ctx, writer);
        return true;
      }
      if (t !== 'Stmt' && t !== 'CmdSubst' && t !== 'ProcSubst') return true;
      const o = this.visitNested(n, t, ctx, writer);
      if (o !== undefined) out = o;
      return false;
    });
    return out;
  }

  private visitNested(n: Node, type: string, ctx: Ctx, writer: string | null): Out {
    if (type === 'Stmt') return this.visitStmt(n as Stmt, ctx);
    if (type === 'ParamExp') {
      // ${x@P} expands the value as a prompt, running the command substitutions it holds.
      this.dynamicCommand(this.nest({ ...ctx, context: 'subst', redirects: [] }, '${…@P}', ctx.origin ?? posOf(n)));
      return undefined;
    }
    if (type === 'CmdSubst') {
      // Its output becomes words of the command: it does not go to the command's redirections.
      const cs = n as CmdSubst;
      if (cs.Backquotes && ctx.backquotes === 0) checkBackquoted(cs, 1, ctx.origin);
      this.visitStmts(cs.Stmts, { ...ctx, context: 'subst', redirects: [], backquotes: ctx.backquotes + (cs.Backquotes ? 1 : 0) });
      return undefined;
    }
    const ps = n as ProcSubst;
    const writes = OPS.procSubst.get(ps.Op) === '>(';
    this.visitStmts(ps.Stmts, {
      ...ctx,
      context: 'proc-subst',
      redirects: [],
      // >(cmd): cmd reads what the enclosing command writes into it.
      ...(writes ? { stdin: { kind: 'pipe' as const, content: null }, pipedFrom: writer } : {}),
    });
    return undefined;
  }

  private redirections(redirs: readonly Redirect[], bq: number): { redirects: { op: string; target: string }[]; stdin: StdinInfo | null } {
    const redirects: { op: string; target: string }[] = [];
    let stdin: StdinInfo | null = null;
    for (const r of redirs) {
      const opStr = OPS.redirect.get(r.Op) ?? `op${r.Op}`;
      const n = r.N?.Value ?? '';
      const isHeredoc = opStr === '<<' || opStr === '<<-';
      const target = r.Word === null ? '' : isHeredoc ? (wordLiteral(r.Word, bq) ?? DYNAMIC) : wordField(r.Word, bq).value;
      redirects.push({ op: n + opStr, target });
      const fd = n === '' ? (opStr[0] === '<' ? 0 : -1) : Number(n);
      if (fd !== 0) continue;
      if (isHeredoc) stdin = { kind: 'heredoc', content: heredocContent(r, bq) };
      else if (opStr === '<<<') stdin = { kind: 'herestring', content: r.Word === null ? null : wordField(r.Word, bq) };
      else if (opStr === '<' || opStr === '<>') stdin = { kind: 'file', content: null };
      else if (opStr === '<&' && target !== '0' && target !== '-') stdin = { kind: 'file', content: null };
    }
    return { redirects, stdin };
  }

  private callExpr(call: CallExpr, outer: Ctx, inner: Ctx, hasOwnRedirects: boolean): Out {
    const fields: Field[] = [];
    for (const w of call.Args) fields.push(...expandWord(w, outer.backquotes));
    this.fieldCount += fields.length;
    if (this.fieldCount > MAX_FIELDS) this.tooComplex(`more than ${MAX_FIELDS} words after brace expansion`, outer.origin ?? posOf(call));
    let out: Out;
    let writer: string | null = null;
    if (fields.length > 0) {
      const first = fields[0]!;
      writer = first.literal && !first.glob ? basename(first.value) : null;
      out = this.argv(fields, inner);
    } else if (hasOwnRedirects) {
      this.redirectOnly(inner);
    }
    // Substitutions in assignments and arguments run in this shell (before the command; listed
    // after it), with the shell's stdin, not the command's redirections.
    for (const a of call.Assigns) this.walk(a, outer, null);
    for (const w of call.Args) this.walk(w, outer, writer);
    return out;
  }

  /** Only redirections (`> /etc/passwd`): no program runs, but the file is opened. */
  private redirectOnly(ctx: Ctx): void {
    this.emit(ctx, null, [], [], false);
  }

  private declClause(decl: DeclClause, outer: Ctx, inner: Ctx): Out {
    const program = decl.Variant.Value;
    const args: string[] = [];
    for (const a of decl.Args) {
      if (a.Naked) {
        if (a.Name !== null) args.push(a.Name.Value);
        else if (a.Value !== null) args.push(wordField(a.Value, outer.backquotes).value);
        continue;
      }
      const name = a.Name?.Value ?? '';
      if (a.Index !== null || a.Array !== null) {
        args.push(DYNAMIC);
        continue;
      }
      const value = a.Value === null ? '' : wordLiteral(a.Value, outer.backquotes);
      args.push(value === null ? DYNAMIC : `${name}${a.Append ? '+=' : '='}${value}`);
    }
    this.emit(inner, program, args, parseFlags(args), false);
    for (const a of decl.Args) this.walk(a, outer, null);
    return program;
  }

  /** Emits the command whose argv is `fields`, then what it wraps. Returns its output program. */
  argv(fields: Field[], ctx: Ctx): Out {
    const first = fields[0];
    if (first === undefined) return undefined;
    const dynamic = !first.literal || first.glob;
    const program = dynamic ? null : basename(first.value);
    const argFields = fields.slice(1);
    const args = argFields.map((f) => f.value);
    const unwrapped = program === null ? null : unwrap(program, argFields);
    const flags = unwrapped?.flags ?? parseFlags(args, unwrapped === null ? args.length : unwrapped.ownEnd);
    this.emit(ctx, program, args, flags, dynamic);
    let out: Out = program;
    if (unwrapped === null) return out;
    for (const inner of unwrapped.inners) {
      if (inner.kind === 'stdin') {
        const content = ctx.stdin.content;
        if ((ctx.stdin.kind === 'heredoc' || ctx.stdin.kind === 'herestring') && content !== null) {
          const wrapper = `${inner.shell} ${ctx.stdin.kind === 'heredoc' ? '<<' : '<<<'}`;
          const o = this.commandString(content, this.nest(ctx, wrapper, content.pos));
          if (o !== undefined) out = o;
        } else if (ctx.stdin.kind === 'pipe') {
          // `… | bash`: the commands are another program's output, known only at run time.
          out = this.dynamicCommand(this.nest(ctx, `${inner.shell} |`, first.pos));
        }
        continue;
      }
      const nctx = this.nest(ctx, inner.wrapper, inner.kind === 'argv' ? (inner.fields[0]?.pos ?? null) : inner.kind === 'string' ? inner.field.pos : null);
      let o: Out;
      if (inner.kind === 'argv') o = this.argv(inner.fields, nctx);
      else if (inner.kind === 'string') o = this.commandString(inner.field, nctx);
      else o = this.dynamicCommand(nctx);
      if (o !== undefined) out = o;
    }
    return out;
  }

  private nest(ctx: Ctx, wrapper: string, at: LineCol | null): Ctx {
    if (ctx.nesting + 1 > MAX_NESTING) this.tooComplex(`wrappers nested deeper than ${MAX_NESTING}`, ctx.origin ?? at);
    return { ...ctx, wrappers: [...ctx.wrappers, wrapper], nesting: ctx.nesting + 1 };
  }

  private dynamicCommand(ctx: Ctx): null {
    this.emit(ctx, null, [], [], true);
    return null;
  }

  /** A string a wrapper hands to a shell: parsed and visited when literal, a dynamic command otherwise. */
  private commandString(field: Field, ctx: Ctx): Out {
    if (!field.literal) return this.dynamicCommand(ctx);
    const origin = ctx.origin ?? field.pos;
    const wrapper = ctx.wrappers[ctx.wrappers.length - 1] ?? 'nested';
    let file;
    try {
      file = parseShell(field.value, `command string of ${wrapper}`);
    } catch (e) {
      if (e instanceof PortcullisError) {
        throw new PortcullisError(e.code, `${e.message} (string at ${origin.line}:${origin.column})`, {
          line: origin.line,
          column: origin.column,
          nestedLine: e.details['line'],
          nestedColumn: e.details['column'],
          wrapper,
        });
      }
      throw e;
    }
    return this.visitStmts(file.Stmts, { ...ctx, origin, backquotes: 0 });
  }
}

export function topContext(): Ctx {
  return {
    context: 'top',
    wrappers: [],
    stdin: NO_STDIN,
    pipedFrom: null,
    redirects: [],
    origin: null,
    nesting: 0,
    backquotes: 0,
  };
}

