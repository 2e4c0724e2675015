// Lexical structure of .tile files. Keywords are declared with `longer_alt: Identifier` so that
// names such as `layouts` or `masked` stay identifiers. `q` and `k` are deliberately NOT keywords:
// users write `mask tile(k) = …`, so `k` must stay usable as a parameter name; the checker gives
// `q.<field>` / `k.<field>` their coordinate meaning.
import { createToken, Lexer, type TokenType } from "chevrotain";

export const WhiteSpace = createToken({ name: "WhiteSpace", pattern: /[ \t\r\n]+/, group: Lexer.SKIPPED });
export const Comment = createToken({ name: "Comment", pattern: /(#|\/\/)[^\n]*/, group: Lexer.SKIPPED });

export const Identifier = createToken({ name: "Identifier", pattern: /[A-Za-z_][A-Za-z0-9_]*/ });

function keyword(word: string): TokenType {
  const name = word
    .split("_")
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join(""); // kv_heads → KvHeads
  return createToken({ name, pattern: word, longer_alt: Identifier });
}

export const Layout = keyword("layout");
export const Mask = keyword("mask");
export const Kernel = keyword("kernel");
export const Model = keyword("model");
export const Video = keyword("video");
export const Text = keyword("text");
export const Before = keyword("before");
export const After = keyword("after");
export const Batch = keyword("batch");
export const Heads = keyword("heads");
export const KvHeads = keyword("kv_heads");
export const HeadDim = keyword("head_dim");
export const Dtype = keyword("dtype");
export const Block = keyword("block");
export const Targets = keyword("targets");
export const Layers = keyword("layers");
export const Layer = keyword("layer");
export const Steps = keyword("steps");
export const Step = keyword("step");
export const Use = keyword("use");
export const All = keyword("all");
export const Any = keyword("any");
export const In = keyword("in");
export const If = keyword("if");
export const Then = keyword("then");
export const Else = keyword("else");
export const And = keyword("and");
export const Or = keyword("or");
export const Not = keyword("not");
export const True = keyword("true");
export const False = keyword("false");

// `8 x 45 x 80`, `6x8x8`, `128 × 128`: one token, so that `x` never needs to be a keyword
// (a keyword `x` would break identifiers like `x8` and make `6x8x8` lex as `6` + `x8x8`).
export const Dims = createToken({ name: "Dims", pattern: /\d+(?:[ \t]*[x×][ \t]*\d+)+/ });
export const Integer = createToken({ name: "Integer", pattern: /\d+/ });

export const DotDot = createToken({ name: "DotDot", pattern: /\.\./ });
export const Dot = createToken({ name: "Dot", pattern: /\./, longer_alt: DotDot });
export const LBrace = createToken({ name: "LBrace", pattern: /\{/ });
export const RBrace = createToken({ name: "RBrace", pattern: /\}/ });
export const LParen = createToken({ name: "LParen", pattern: /\(/ });
export const RParen = createToken({ name: "RParen", pattern: /\)/ });
export const Comma = createToken({ name: "Comma", pattern: /,/ });
export const Colon = createToken({ name: "Colon", pattern: /:/ });
export const Semicolon = createToken({ name: "Semicolon", pattern: /;/ });
export const AndAnd = createToken({ name: "AndAnd", pattern: /&&/ });
export const OrOr = createToken({ name: "OrOr", pattern: /\|\|/ });
export const EqEq = createToken({ name: "EqEq", pattern: /==/ });
export const NotEq = createToken({ name: "NotEq", pattern: /!=/ });
export const Bang = createToken({ name: "Bang", pattern: /!/, longer_alt: NotEq });
export const LessEq = createToken({ name: "LessEq", pattern: /<=/ });
export const Less = createToken({ name: "Less", pattern: /</, longer_alt: LessEq });
export const GreaterEq = createToken({ name: "GreaterEq", pattern: />=/ });
export const Greater = createToken({ name: "Greater", pattern: />/, longer_alt: GreaterEq });
export const Assign = createToken({ name: "Assign", pattern: /=/, longer_alt: EqEq });
export const Plus = createToken({ name: "Plus", pattern: /\+/ });
export const Minus = createToken({ name: "Minus", pattern: /-/ });
export const Star = createToken({ name: "Star", pattern: /\*/ });
export const Slash = createToken({ name: "Slash", pattern: /\// }); // floor division; `//` starts a comment
export const Percent = createToken({ name: "Percent", pattern: /%/ });

export const keywords = [
  Layout,
  Mask,
  Kernel,
  Model,
  Video,
  Text,
  Before,
  After,
  Batch,
  Heads,
  KvHeads,
  HeadDim,
  Dtype,
  Block,
  Targets,
  Layers,
  Layer,
  Steps,
  Step,
  Use,
  All,
  Any,
  In,
  If,
  Then,
  Else,
  And,
  Or,
  Not,
  True,
  False,
];

// Order matters: comments before `/`, multi-character operators before their prefixes.
export const allTokens: TokenType[] = [
  WhiteSpace,
  Comment,
  Dims,
  Integer,
  ...keywords,
  Identifier,
  DotDot,
  Dot,
  LBrace,
  RBrace,
  LParen,
  RParen,
  Comma,
  Colon,
  Semicolon,
  AndAnd,
  OrOr,
  EqEq,
  NotEq,
  Bang,
  LessEq,
  Less,
  GreaterEq,
  Greater,
  Assign,
  Plus,
  Minus,
  Star,
  Slash,
  Percent,
];

export const tileLexer = new Lexer(allTokens, { positionTracking: "full", ensureOptimizations: false });
