// A plan's pictures: an ASCII tile map for terminals and an SVG tile map for files and the playground.
// Both show query blocks down and key/value blocks across, full / partial / empty, with frame borders.
import { videoStart, type Layout } from "./layout.ts";
import { EMPTY, FULL, PARTIAL, type BlockPlan } from "./plan.ts";

const ASCII = { [FULL]: "#", [PARTIAL]: "+", [EMPTY]: "." } as const;

/**
 * ASCII map, downsampled to at most `maxCols` characters across: a character is `#` when all blocks it
 * covers are full, `.` when all are empty, `+` otherwise.
 */
export function planAscii(plan: BlockPlan, maxCols = 64): string {
  const step = Math.max(1, Math.ceil(Math.max(plan.numQBlocks, plan.numKvBlocks) / maxCols));
  const rows = Math.ceil(plan.numQBlocks / step);
  const cols = Math.ceil(plan.numKvBlocks / step);
  const lines: string[] = [];
  for (let r = 0; r < rows; r++) {
    let line = "";
    for (let c = 0; c < cols; c++) {
      let full = 0;
      let empty = 0;
      let n = 0;
      for (let qb = r * step; qb < Math.min(plan.numQBlocks, (r + 1) * step); qb++) {
        for (let kb = c * step; kb < Math.min(plan.numKvBlocks, (c + 1) * step); kb++) {
          const k = plan.classes[qb * plan.numKvBlocks + kb];
          if (k === FULL) full++;
          else if (k === EMPTY) empty++;
          n++;
        }
      }
      line += full === n ? ASCII[FULL] : empty === n ? ASCII[EMPTY] : ASCII[PARTIAL];
    }
    lines.push(line);
  }
  const scale = step > 1 ? ` (1 char = ${step}×${step} blocks)` : "";
  return `${lines.join("\n")}\n# full  + partial  . empty${scale}`;
}

const COLORS = { [FULL]: "#2b5fa8", [PARTIAL]: "#f0a030", empty: "#f4f4f2" } as const;

export interface SvgOptions {
  readonly title?: string;
  readonly size?: number;
  readonly layout?: Layout;
}

/**
 * SVG map. Consecutive identical rows are merged and each row is run-length encoded, so a 675×675
 * Attention Tile plan is a few thousand rectangles, not 455,625.
 */
export function planSvg(plan: BlockPlan, options: SvgOptions = {}): string {
  const size = options.size ?? 720;
  const margin = { left: 56, top: options.title ? 58 : 30, right: 16, bottom: 44 };
  const cw = size / plan.numKvBlocks;
  const ch = size / plan.numQBlocks;
  const w = size + margin.left + margin.right;
  const h = size + margin.top + margin.bottom;
  const fmt = (x: number) => (Math.round(x * 100) / 100).toString();
  const rects: string[] = [];
  const n = plan.numKvBlocks;
  for (let qb = 0; qb < plan.numQBlocks;) {
    let end = qb + 1;
    while (end < plan.numQBlocks && sameRow(plan.classes, qb, end, n)) end++;
    for (let kb = 0; kb < n;) {
      const cls = plan.classes[qb * n + kb]!;
      let run = kb + 1;
      while (run < n && plan.classes[qb * n + run] === cls) run++;
      if (cls !== EMPTY) {
        rects.push(
          `<rect x="${fmt(kb * cw)}" y="${fmt(qb * ch)}" width="${fmt((run - kb) * cw)}" height="${fmt((end - qb) * ch)}" fill="${COLORS[cls as 1 | 2]}"/>`,
        );
      }
      kb = run;
    }
    qb = end;
  }
  const lines: string[] = [];
  const labels: string[] = [];
  if (options.layout) {
    // Frame borders: token positions mapped to the block grid (they need not align with blocks).
    const l = options.layout;
    const perFrame = l.height * l.width;
    const step = Math.max(1, Math.ceil(l.frames / 24));
    for (let f = 0; f <= l.frames; f++) {
      const t = videoStart(l) + f * perFrame;
      const x = (t / plan.blockKv) * cw;
      const y = (t / plan.blockQ) * ch;
      lines.push(
        `<line x1="${fmt(x)}" y1="0" x2="${fmt(x)}" y2="${size}"/><line x1="0" y1="${fmt(y)}" x2="${size}" y2="${fmt(y)}"/>`,
      );
      if (f < l.frames && f % step === 0) {
        const mid = ((t + perFrame / 2) / plan.blockKv) * cw;
        labels.push(`<text x="${fmt(mid)}" y="-6" text-anchor="middle">${f}</text>`);
        labels.push(
          `<text x="-6" y="${fmt(((t + perFrame / 2) / plan.blockQ) * ch + 4)}" text-anchor="end">${f}</text>`,
        );
      }
    }
    if (l.textTokens > 0) {
      const t0 = l.textPosition === "before" ? 0 : videoStart(l) + l.frames * perFrame;
      const x = (t0 / plan.blockKv) * cw;
      const tw = (l.textTokens / plan.blockKv) * cw;
      lines.push(
        `<rect x="${fmt(x)}" y="0" width="${fmt(tw)}" height="${size}" fill="none" stroke="#7a3" stroke-dasharray="4 3"/>`,
      );
    }
  }
  const title = options.title
    ? `<text x="${margin.left}" y="22" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`
    : "";
  const legend = [
    [COLORS[FULL], `full ${plan.counts.full}`],
    [COLORS[PARTIAL], `partial ${plan.counts.partial}`],
    [COLORS.empty, `empty ${plan.counts.empty}`],
  ]
    .map(
      ([c, t], i) =>
        `<rect x="${margin.left + i * 150}" y="${h - 24}" width="12" height="12" fill="${c}" stroke="#999"/><text x="${margin.left + i * 150 + 18}" y="${h - 14}">${t}</text>`,
    )
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="11">
<rect width="${w}" height="${h}" fill="white"/>
${title}
<g transform="translate(${margin.left},${margin.top})">
<rect width="${size}" height="${size}" fill="${COLORS.empty}"/>
${rects.join("\n")}
<g stroke="#333" stroke-width="0.6" opacity="0.7">${lines.join("")}</g>
<g fill="#333">${labels.join("")}</g>
<text x="${size / 2}" y="${size + 16}" text-anchor="middle">key/value blocks (${plan.numKvBlocks} × ${plan.blockKv}) → frames labelled on top</text>
</g>
<text transform="translate(14,${margin.top + size / 2}) rotate(-90)" text-anchor="middle">query blocks (${plan.numQBlocks} × ${plan.blockQ}) ↓</text>
${legend}
</svg>
`;
}

function sameRow(classes: Uint8Array, a: number, b: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (classes[a * n + i] !== classes[b * n + i]) return false;
  return true;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!);
}
