// Minimal type declarations for `mvdan-sh` (GopherJS build of mvdan.cc/sh/v3/syntax), covering
// only what src/policy/shell uses: the parser and its errors. The tree it returns is read through
// its Go values and copied into the plain AST typed in ast.ts (see there why).

declare module 'mvdan-sh' {
  namespace mvdanSh {
    interface Pos {
      Line(): number;
      Col(): number;
      Offset(): number;
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
      /** Returns the *syntax.File wrapper; ast.ts reads it (typed there). */
      Parse(src: string, name: string): unknown;
    }

    type ParserOption = (p: unknown) => void;

    interface Syntax {
      NewParser(...options: ParserOption[]): Parser;
      KeepComments(enabled: boolean): ParserOption;
    }
  }

  const sh: { syntax: mvdanSh.Syntax };
  export default sh;
  export type ParseError = mvdanSh.ParseError;
  export type Parser = mvdanSh.Parser;
}
