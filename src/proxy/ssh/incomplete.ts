// Is a command line incomplete — would the shell wait for more lines (open quote, `for` without
// `done`, here-document without its end, trailing `|` or `&&`)? Such a line is forwarded as a
// continuation (the shell runs nothing yet) and decided together with what completes it.
import { shellFactsCached } from '../../policy/shell/index.js';
import { PortcullisError } from '../../policy/types.js';

export function isIncomplete(text: string): boolean {
  // a trailing backslash joins the next line (the parser takes it as a literal at the end)
  const trail = /\\+$/.exec(text);
  if (trail && trail[0].length % 2 === 1) return true;
  try {
    shellFactsCached(text);
    return false;
  } catch (e) {
    return e instanceof PortcullisError && e.details.incomplete === true;
  }
}
