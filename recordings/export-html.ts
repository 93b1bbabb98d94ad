// Self-contained HTML for a recording: asciinema-player's JS and CSS inlined (from
// node_modules/asciinema-player/dist/bundle, or embedded in the single binary: src/runtime/assets.ts)
// and the cast embedded as data, so the file opens offline from anywhere. PostgreSQL (and later
// Kubernetes) transcripts are rendered as static HTML in the same file.
import { readAsset } from '../src/runtime/assets.js';
import { escapeHtml, renderTranscriptHtml, TRANSCRIPT_CSS, type TranscriptEntry } from './transcript.js';

export const PLAYER_JS = 'node_modules/asciinema-player/dist/bundle/asciinema-player.min.js';
export const PLAYER_CSS = 'node_modules/asciinema-player/dist/bundle/asciinema-player.css';

/** JSON that is safe inside <script>: no `</script>`, no `<!--`, no U+2028/2029 surprises. */
export function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Inline a script body: a literal `</script` inside it would end the element early. */
function inlineScript(js: string): string {
  return js.replace(/<\/(script)/gi, '<\\/$1');
}

export interface ExportInput {
  title: string;
  /** Lines of facts shown above the player (session, identity, target, ...). */
  meta?: [string, string][];
  /** The asciicast v2 text. */
  cast?: string;
  transcript?: TranscriptEntry[];
  /** asciinema-player options (idleTimeLimit, speed, ...). */
  player?: Record<string, unknown>;
}

export function exportHtml(input: ExportInput): string {
  const h = escapeHtml;
  const parts: string[] = [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    // Nothing is loaded from anywhere: the player, the styles and the recording are in this file.
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; img-src data:; font-src data:; connect-src data:">`,
    `<title>${h(input.title)}</title>`,
    '<style>body{margin:0;background:#fff;font:14px system-ui,sans-serif}main{max-width:80em;margin:0 auto;padding:1em}dl.pc-meta{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:13px}dl.pc-meta dt{color:#666}dl.pc-meta dd{margin:0}#pc-player{margin:1em 0}</style>',
  ];
  if (input.cast !== undefined) parts.push(`<style>${readAsset(PLAYER_CSS).toString('utf8')}</style>`);
  if (input.transcript) parts.push(`<style>${TRANSCRIPT_CSS}</style>`);
  parts.push('</head><body><main>', `<h1>${h(input.title)}</h1>`);
  if (input.meta?.length) parts.push(`<dl class="pc-meta">${input.meta.map(([k, v]) => `<dt>${h(k)}</dt><dd>${h(v)}</dd>`).join('')}</dl>`);
  if (input.cast !== undefined) {
    parts.push('<div id="pc-player"></div>');
    parts.push(`<script type="application/json" id="pc-cast">${scriptJson(input.cast)}</script>`);
    parts.push(`<script>${inlineScript(readAsset(PLAYER_JS).toString('utf8'))}</script>`);
    parts.push(
      `<script>(function(){var cast=JSON.parse(document.getElementById('pc-cast').textContent);` +
        `window.pcPlayer=AsciinemaPlayer.create({data:cast},document.getElementById('pc-player'),${scriptJson({ fit: 'width', ...(input.player ?? {}) })});})();</script>`,
    );
  }
  if (input.transcript) parts.push(renderTranscriptHtml(input.transcript));
  parts.push('</main></body></html>');
  return parts.join('\n') + '\n';
}
