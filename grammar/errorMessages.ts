// Syntax error wording. chevrotain's defaults ("Expecting token of type --> RBrace <--") name internal
// token types; these name what the user would type.
import { EOF, type IParserErrorMessageProvider, type IToken, type TokenType } from "chevrotain";

export function describeToken(t: IToken | undefined): string {
  if (!t || t.tokenType === EOF) return "end of input";
  return `'${t.image}'`;
}

export function tokenName(t: TokenType): string {
  const pattern = t.PATTERN;
  if (typeof pattern === "string") return `'${pattern}'`;
  switch (t.name) {
    case "Identifier":
      return "a name";
    case "Integer":
      return "a number";
    case "Dims":
      return "a shape such as 128 x 128";
    case "EOF":
      return "end of input";
    default:
      return pattern instanceof RegExp ? `'${pattern.source.replace(/\\/g, "")}'` : t.name;
  }
}

function oneOf(names: string[]): string {
  const unique = [...new Set(names)];
  if (unique.length <= 1) return unique[0] ?? "something else";
  if (unique.length > 6) return `${unique.slice(0, 6).join(", ")}, …`;
  return `${unique.slice(0, -1).join(", ")} or ${unique[unique.length - 1]}`;
}

export const errorMessages: IParserErrorMessageProvider = {
  buildMismatchTokenMessage({ expected, actual }) {
    return `expected ${tokenName(expected)} but found ${describeToken(actual)}`;
  },
  buildNotAllInputParsedMessage({ firstRedundant }) {
    return `unexpected ${describeToken(firstRedundant)}: expected a declaration (layout, mask, kernel or model)`;
  },
  buildNoViableAltMessage({ expectedPathsPerAlt, actual }) {
    const firsts = expectedPathsPerAlt.flatMap((paths) => paths.map((p) => (p[0] ? tokenName(p[0]) : "")));
    return `unexpected ${describeToken(actual[0])}: expected ${oneOf(firsts.filter(Boolean))}`;
  },
  buildEarlyExitMessage({ expectedIterationPaths, actual }) {
    const firsts = expectedIterationPaths.map((p) => (p[0] ? tokenName(p[0]) : ""));
    return `unexpected ${describeToken(actual[0])}: expected at least one ${oneOf(firsts.filter(Boolean))}`;
  },
};
