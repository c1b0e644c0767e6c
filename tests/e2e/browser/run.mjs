// Drives Debian's headless Chromium (playwright-core, no downloaded browser) against the test UI
// that takgate serves, for tests/e2e/test_browser.py. Protocol on stdin/stdout, one JSON object
// per line:
//   -> {"event":"ready", "status": "..."}           logged in, Socket.IO connected
//   <- {"expect": "<callsign>", "lat": "<lat>"}     the test is about to send that CoT
//   -> {"event":"seen", "ms": N, "kind": "...", "row": "..."}   a row with that callsign and
//      latitude appeared
//      (ms counted from the moment the expect line was read), or {"event":"error", ...}
//   then a screenshot is written and {"event":"done"} printed.
// Arguments: --url U --user U --password P --screenshot FILE [--chromium PATH] [--timeout MS]
import { createInterface } from "node:readline";
import { launch, loginTestPage } from "./chromium.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, v, i, a) => (i % 2 === 0 ? [...acc, [v.replace(/^--/, ""), a[i + 1]]] : acc), []),
);
const timeout = Number(args.timeout || 10000);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const lines = createInterface({ input: process.stdin });
const nextLine = () =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no line on stdin within ${timeout} ms`)), timeout);
    lines.once("line", (l) => { clearTimeout(t); resolve(l); });
  });

let browser;
const consoleLog = [];
try {
  const launched = await launch(args.chromium, timeout);
  browser = launched.context;
  const page = launched.page;
  page.on("console", (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLog.push(`pageerror: ${e.message}`));

  await page.goto(args.url, { timeout });
  const status = await loginTestPage(page, args.user, args.password, timeout);
  out({ event: "ready", status, me: await page.textContent("#me") });

  const { expect, lat } = JSON.parse(await nextLine());
  const t0 = performance.now();
  const row = page.locator(`tr.event[data-callsign="${expect}"][data-lat="${lat}"]`).first();
  await row.waitFor({ state: "visible", timeout });
  const ms = performance.now() - t0;
  out({
    event: "seen", ms, kind: await row.getAttribute("data-kind"), uid: await row.getAttribute("data-uid"),
    row: await row.innerText(), status: await page.textContent("#status"),
  });
  await page.screenshot({ path: args.screenshot, fullPage: true });
  out({ event: "done", screenshot: args.screenshot });
} catch (e) {
  out({ event: "error", error: String(e && e.stack || e), console: consoleLog });
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  lines.close();
}
