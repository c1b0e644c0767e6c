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
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

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

const profile = mkdtempSync(join(tmpdir(), "takgate-e2e-chromium-"));
let browser;
const consoleLog = [];
try {
  // A new, empty profile (--user-data-dir) for every run; playwright passes it itself.
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium || "/usr/bin/chromium",
    headless: true,
    timeout,
    viewport: { width: 1280, height: 720 },
    // Debian's chromium as root on a machine without a network: no sandbox, no background traffic.
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = browser.pages()[0] || (await browser.newPage());
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLog.push(`pageerror: ${e.message}`));

  await page.goto(args.url, { timeout });
  await page.fill("#username", args.user);
  await page.fill("#password", args.password);
  await page.click("#submit");
  await page.waitForFunction(
    () => /^connected|error|disconnected|Error/.test(document.getElementById("status").textContent),
    null, { timeout },
  );
  const status = await page.textContent("#status");
  if (!status.startsWith("connected")) throw new Error(`page status: ${status}`);
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
  rmSync(profile, { recursive: true, force: true });
}
