// Minimal type declarations for `mvdan-sh` (GopherJS build of mvdan.cc/sh/v3/syntax), covering
// only what src/policy/shell uses. Field names follow the Go AST (pkg.go.dev/mvdan.cc/sh/v3/syntax).
// Go slices arrive as JS arrays, nil pointers as null; operators are numeric Go token values (the
// extractor learns their meaning at load time by parsing a calibration line, see ast.ts).

declare module 'mvdan-sh' {
  namespace mvdanSh {
    interface Pos {
      Line(): number;
      Col(): number;
      Offset(): number;
      IsValid(): boolean;
    }

    interface Node {
      Pos(): Pos;
      End(): Pos;
    }

    interface File extends Node {
      Stmts: Stmt[];
    }

    interface Stmt extends Node {
      /** null for a statement that is only redirections with no command (never in practice: CallExpr with no args). */
      Cmd: Node | null;
      Redirs: Redirect[];
      Negated: boolean;
      Background: boolean;
    }

    interface Lit extends Node {
      Value: string;
    }

    interface Word extends Node {
      Parts: Node[];
    }

    interface SglQuoted extends Node {
      Value: string;
      /** `$'…'` (ANSI-C quoting). */
      Dollar: boolean;
    }

    interface DblQuoted extends Node {
      Parts: Node[];
      Dollar: boolean;
    }

    interface CmdSubst extends Node {
      Stmts: Stmt[];
      Backquotes: boolean;
    }

    interface ProcSubst extends Node {
      Op: number;
      Stmts: Stmt[];
    }

    interface Expansion {
      Op: number;
      Word: Word | null;
    }

    interface ParamExp extends Node {
      Param: Lit | null;
      Exp: Expansion | null;
    }

    interface BraceExp extends Node {
      Sequence: boolean;
      Elems: Word[];
    }

    interface Assign extends Node {
      Name: Lit | null;
      Value: Word | null;
      Index: Node | null;
      Array: Node | null;
      Naked: boolean;
      Append: boolean;
    }

    interface CallExpr extends Node {
      Assigns: Assign[];
      Args: Word[];
    }

    interface Redirect extends Node {
      Op: number;
      N: Lit | null;
      Word: Word | null;
      Hdoc: Word | null;
    }

    interface BinaryCmd extends Node {
      Op: number;
      X: Stmt;
      Y: Stmt;
    }

    interface Subshell extends Node {
      Stmts: Stmt[];
    }

    interface Block extends Node {
      Stmts: Stmt[];
    }

    interface FuncDecl extends Node {
      Name: Lit;
      Body: Stmt;
    }

    interface TimeClause extends Node {
      Stmt: Stmt | null;
      PosixFormat: boolean;
    }

    interface DeclClause extends Node {
      Variant: Lit;
      Args: Assign[];
    }

    /** What Parse throws (not an Error instance). */
    interface ParseError {
      Filename: string;
      Pos: Pos;
      Text: string;
      Incomplete: boolean;
      Error(): string;
    }

    interface Parser {
      Parse(src: string, name: string): File;
    }

    type ParserOption = (p: unknown) => void;

    interface Syntax {
      NewParser(...options: ParserOption[]): Parser;
      NodeType(node: Node): string;
      /** Calls f for each node, depth first; f(null) after a node's children. Return false to skip the children. */
      Walk(node: Node, f: (node: Node | null) => boolean): void;
      /** Splits unquoted brace expansions into BraceExp parts, in place; returns the word. */
      SplitBraces(word: Word): Word;
      KeepComments(enabled: boolean): ParserOption;
    }
  }

  const sh: { syntax: mvdanSh.Syntax };
  export default sh;
  export type Pos = mvdanSh.Pos;
  export type Node = mvdanSh.Node;
  export type File = mvdanSh.File;
  export type Stmt = mvdanSh.Stmt;
  export type Lit = mvdanSh.Lit;
  export type Word = mvdanSh.Word;
  export type SglQuoted = mvdanSh.SglQuoted;
  export type DblQuoted = mvdanSh.DblQuoted;
  export type CmdSubst = mvdanSh.CmdSubst;
  export type ProcSubst = mvdanSh.ProcSubst;
  export type BraceExp = mvdanSh.BraceExp;
  export type ParamExp = mvdanSh.ParamExp;
  export type Assign = mvdanSh.Assign;
  export type CallExpr = mvdanSh.CallExpr;
  export type Redirect = mvdanSh.Redirect;
  export type BinaryCmd = mvdanSh.BinaryCmd;
  export type Subshell = mvdanSh.Subshell;
  export type Block = mvdanSh.Block;
  export type FuncDecl = mvdanSh.FuncDecl;
  export type TimeClause = mvdanSh.TimeClause;
  export type DeclClause = mvdanSh.DeclClause;
  export type ParseError = mvdanSh.ParseError;
  export type Parser = mvdanSh.Parser;
  export type Syntax = mvdanSh.Syntax;
}
