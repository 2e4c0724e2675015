// The .tile grammar as a chevrotain CstParser: syntax only, no semantics (the CST becomes an AST in
// toAst.ts and gets its meaning in compiler/check.ts). Error recovery is on, so one run reports every
// syntax error; newlines are insignificant and `;` may end any field.
//
//   spec        := item*
//   item        := layoutDecl | maskDecl | kernelDecl | modelDecl
//   layoutDecl  := "layout" Ident "{" layoutField* "}"
//   layoutField := "video" Dims | "text" Int ("before" | "after")? | "batch" Int | "heads" Int
//                | "kv_heads" Int | "head_dim" Int | "dtype" Ident
//   maskDecl    := "mask" Ident ("(" (Ident ("," Ident)*)? ")")? "=" expr
//   kernelDecl  := "kernel" Ident "{" kernelField* "}"
//   kernelField := "layout" Ident | "mask" expr | "block" Dims | "targets" Ident ("," Ident)*
//   modelDecl   := "model" Ident "{" modelField* "}"
//   modelField  := "layers" Int | "steps" Int | "layer" range "use" Ident
//                | "step" range "layer" range "use" Ident
//   range       := "all" | Int (".." Int)?
//   expr := or
//   or := and (("or" | "||") and)*      and := not (("and" | "&&") not)*     not := ("not" | "!") not | cmp
//   cmp := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?    sum := product (("+" | "-") product)*
//   product := unary (("*" | "/" | "%") unary)*                   unary := "-" unary | postfix
//   postfix := primary ("." Ident call?)*
//   primary := Int | "true" | "false" | "(" expr ")" | Ident call?
//            | "if" expr "then" expr "else" expr | ("any" | "all") Ident "in" sum ".." sum ":" expr
//   (the last two extend as far right as they can, like a lambda: `a or any i in 0..n-1: b and c`)
//   call := "(" (arg ("," arg)*)? ")"          arg := Dims | expr
import { CstParser, type CstNode } from "chevrotain";
import { errorMessages } from "./errorMessages.ts";
import * as T from "./tokens.ts";

class TileParser extends CstParser {
  constructor() {
    super(T.allTokens, {
      recoveryEnabled: true,
      nodeLocationTracking: "full",
      maxLookahead: 3,
      errorMessageProvider: errorMessages,
    });
    this.performSelfAnalysis();
  }

  spec = this.RULE("spec", () => {
    this.MANY(() => this.SUBRULE(this.item));
  });

  item = this.RULE("item", () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.layoutDecl) },
      { ALT: () => this.SUBRULE(this.maskDecl) },
      { ALT: () => this.SUBRULE(this.kernelDecl) },
      { ALT: () => this.SUBRULE(this.modelDecl) },
    ]);
  });

  layoutDecl = this.RULE("layoutDecl", () => {
    this.CONSUME(T.Layout);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.LBrace);
    this.MANY(() => this.SUBRULE(this.layoutField));
    this.CONSUME(T.RBrace);
  });

  layoutField = this.RULE("layoutField", () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Video);
          this.CONSUME(T.Dims);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Text);
          this.CONSUME(T.Integer);
          this.OPTION(() =>
            this.OR2([{ ALT: () => this.CONSUME(T.Before) }, { ALT: () => this.CONSUME(T.After) }]),
          );
        },
      },
      {
        ALT: () => {
          this.OR3([
            { ALT: () => this.CONSUME(T.Batch) },
            { ALT: () => this.CONSUME(T.Heads) },
            { ALT: () => this.CONSUME(T.KvHeads) },
            { ALT: () => this.CONSUME(T.HeadDim) },
          ]);
          this.CONSUME2(T.Integer);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Dtype);
          this.CONSUME(T.Identifier);
        },
      },
    ]);
    this.OPTION2(() => this.CONSUME(T.Semicolon));
  });

  maskDecl = this.RULE("maskDecl", () => {
    this.CONSUME(T.Mask);
    this.CONSUME(T.Identifier);
    this.OPTION(() => {
      this.CONSUME(T.LParen);
      this.MANY_SEP({ SEP: T.Comma, DEF: () => this.CONSUME2(T.Identifier, { LABEL: "param" }) });
      this.CONSUME(T.RParen);
    });
    this.CONSUME(T.Assign);
    this.SUBRULE(this.expression);
    this.OPTION2(() => this.CONSUME(T.Semicolon));
  });

  kernelDecl = this.RULE("kernelDecl", () => {
    this.CONSUME(T.Kernel);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.LBrace);
    this.MANY(() => this.SUBRULE(this.kernelField));
    this.CONSUME(T.RBrace);
  });

  kernelField = this.RULE("kernelField", () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Layout);
          this.CONSUME(T.Identifier);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Mask);
          this.SUBRULE(this.expression);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Block);
          this.CONSUME(T.Dims);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Targets);
          this.AT_LEAST_ONE_SEP({
            SEP: T.Comma,
            DEF: () => this.CONSUME2(T.Identifier, { LABEL: "target" }),
          });
        },
      },
    ]);
    this.OPTION(() => this.CONSUME(T.Semicolon));
  });

  modelDecl = this.RULE("modelDecl", () => {
    this.CONSUME(T.Model);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.LBrace);
    this.MANY(() => this.SUBRULE(this.modelField));
    this.CONSUME(T.RBrace);
  });

  modelField = this.RULE("modelField", () => {
    this.OR([
      {
        ALT: () => {
          this.OR2([{ ALT: () => this.CONSUME(T.Layers) }, { ALT: () => this.CONSUME(T.Steps) }]);
          this.CONSUME(T.Integer);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Layer);
          this.SUBRULE(this.range, { LABEL: "layerRange" });
          this.CONSUME(T.Use);
          this.CONSUME(T.Identifier);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Step);
          this.SUBRULE2(this.range, { LABEL: "stepRange" });
          this.CONSUME2(T.Layer);
          this.SUBRULE3(this.range, { LABEL: "layerRange" });
          this.CONSUME2(T.Use);
          this.CONSUME2(T.Identifier);
        },
      },
    ]);
    this.OPTION(() => this.CONSUME(T.Semicolon));
  });

  range = this.RULE("range", () => {
    this.OR([
      { ALT: () => this.CONSUME(T.All) },
      {
        ALT: () => {
          this.CONSUME(T.Integer, { LABEL: "lo" });
          this.OPTION(() => {
            this.CONSUME(T.DotDot);
            this.CONSUME2(T.Integer, { LABEL: "hi" });
          });
        },
      },
    ]);
  });

  expression = this.RULE("expression", () => {
    this.SUBRULE(this.orExpr);
  });

  ifExpr = this.RULE("ifExpr", () => {
    this.CONSUME(T.If);
    this.SUBRULE(this.expression, { LABEL: "cond" });
    this.CONSUME(T.Then);
    this.SUBRULE2(this.expression, { LABEL: "then" });
    this.CONSUME(T.Else);
    this.SUBRULE3(this.expression, { LABEL: "else" });
  });

  quantExpr = this.RULE("quantExpr", () => {
    this.OR([{ ALT: () => this.CONSUME(T.Any) }, { ALT: () => this.CONSUME(T.All) }]);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.In);
    this.SUBRULE(this.additive, { LABEL: "lo" });
    this.CONSUME(T.DotDot);
    this.SUBRULE2(this.additive, { LABEL: "hi" });
    this.CONSUME(T.Colon);
    this.SUBRULE(this.expression, { LABEL: "body" });
  });

  orExpr = this.RULE("orExpr", () => {
    this.SUBRULE(this.andExpr, { LABEL: "operand" });
    this.MANY(() => {
      this.OR([
        { ALT: () => this.CONSUME(T.Or, { LABEL: "op" }) },
        { ALT: () => this.CONSUME(T.OrOr, { LABEL: "op" }) },
      ]);
      this.SUBRULE2(this.andExpr, { LABEL: "operand" });
    });
  });

  andExpr = this.RULE("andExpr", () => {
    this.SUBRULE(this.notExpr, { LABEL: "operand" });
    this.MANY(() => {
      this.OR([
        { ALT: () => this.CONSUME(T.And, { LABEL: "op" }) },
        { ALT: () => this.CONSUME(T.AndAnd, { LABEL: "op" }) },
      ]);
      this.SUBRULE2(this.notExpr, { LABEL: "operand" });
    });
  });

  notExpr = this.RULE("notExpr", () => {
    this.OR([
      {
        ALT: () => {
          this.OR2([
            { ALT: () => this.CONSUME(T.Not, { LABEL: "op" }) },
            { ALT: () => this.CONSUME(T.Bang, { LABEL: "op" }) },
          ]);
          this.SUBRULE(this.notExpr, { LABEL: "operand" });
        },
      },
      { ALT: () => this.SUBRULE(this.comparison, { LABEL: "operand" }) },
    ]);
  });

  comparison = this.RULE("comparison", () => {
    this.SUBRULE(this.additive, { LABEL: "operand" });
    this.OPTION(() => {
      this.OR(
        [T.EqEq, T.NotEq, T.LessEq, T.Less, T.GreaterEq, T.Greater].map((tok) => ({
          ALT: () => this.CONSUME(tok, { LABEL: "op" }),
        })),
      );
      this.SUBRULE2(this.additive, { LABEL: "operand" });
    });
  });

  additive = this.RULE("additive", () => {
    this.SUBRULE(this.multiplicative, { LABEL: "operand" });
    this.MANY(() => {
      this.OR([
        { ALT: () => this.CONSUME(T.Plus, { LABEL: "op" }) },
        { ALT: () => this.CONSUME(T.Minus, { LABEL: "op" }) },
      ]);
      this.SUBRULE2(this.multiplicative, { LABEL: "operand" });
    });
  });

  multiplicative = this.RULE("multiplicative", () => {
    this.SUBRULE(this.unary, { LABEL: "operand" });
    this.MANY(() => {
      this.OR([
        { ALT: () => this.CONSUME(T.Star, { LABEL: "op" }) },
        { ALT: () => this.CONSUME(T.Slash, { LABEL: "op" }) },
        { ALT: () => this.CONSUME(T.Percent, { LABEL: "op" }) },
      ]);
      this.SUBRULE2(this.unary, { LABEL: "operand" });
    });
  });

  unary = this.RULE("unary", () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Minus, { LABEL: "op" });
          this.SUBRULE(this.unary, { LABEL: "operand" });
        },
      },
      { ALT: () => this.SUBRULE(this.postfix, { LABEL: "operand" }) },
    ]);
  });

  postfix = this.RULE("postfix", () => {
    this.SUBRULE(this.primary);
    this.MANY(() => this.SUBRULE(this.member));
  });

  // After a dot any word is a field name, keywords included (`q.text`, `q.video`).
  member = this.RULE("member", () => {
    this.CONSUME(T.Dot);
    this.OR(
      [T.Identifier, ...T.keywords].map((tok) => ({ ALT: () => this.CONSUME(tok, { LABEL: "field" }) })),
    );
    this.OPTION(() => this.SUBRULE(this.callArgs));
  });

  primary = this.RULE("primary", () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Integer) },
      { ALT: () => this.CONSUME(T.True) },
      { ALT: () => this.CONSUME(T.False) },
      { ALT: () => this.SUBRULE(this.ifExpr) },
      { ALT: () => this.SUBRULE(this.quantExpr) },
      {
        ALT: () => {
          this.CONSUME(T.LParen);
          this.SUBRULE(this.expression);
          this.CONSUME(T.RParen);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Identifier);
          this.OPTION(() => this.SUBRULE(this.callArgs));
        },
      },
    ]);
  });

  callArgs = this.RULE("callArgs", () => {
    this.CONSUME(T.LParen);
    this.MANY_SEP({
      SEP: T.Comma,
      DEF: () =>
        this.OR([
          { ALT: () => this.CONSUME(T.Dims, { LABEL: "arg" }) },
          { ALT: () => this.SUBRULE(this.expression, { LABEL: "arg" }) },
        ]),
    });
    this.CONSUME(T.RParen);
  });
}

// One parser instance is reused: chevrotain parsers are expensive to build and reset on `input =`.
export const tileParser = new TileParser();

export function parseCst(tokens: import("chevrotain").IToken[]): CstNode {
  tileParser.input = tokens;
  return tileParser.spec();
}
