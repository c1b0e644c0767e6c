// Debian's headless Chromium through playwright-core (no downloaded browser), the one way the
// browser drivers (run.mjs, slowlink.mjs) start it (a new, empty profile every run, removed on
// close) and log in on the test page (ui/index.html).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function launch(executablePath, timeout) {
  const profile = mkdtempSync(join(tmpdir(), "takgate-e2e-chromium-"));
  let context;
  try {
    // --user-data-dir is the profile; playwright passes it itself.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: executablePath || "/usr/bin/chromium",
      headless: true,
      timeout,
      viewport: { width: 1280, height: 720 },
      // The test listeners' certificates are OTS's own CA's (or a test CA's), not a public one.
      ignoreHTTPSErrors: true,
      // Debian's chromium as root on a machine without a network: no sandbox, no background
      // traffic.
      args: [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
    });
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  context.on("close", () => rmSync(profile, { recursive: true, force: true }));
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(timeout);
  return { context, page };
}

// Logs in on the test page the way OTS's UI does and waits for its Socket.IO status; returns
// the status ("connected (polling)" …), or throws with it.
export async function loginTestPage(page, user, password, timeout) {
  await page.fill("#username", user);
  await page.fill("#password", password);
  await page.click("#submit");
  await page.waitForFunction(
    () => /^connected|error|disconnected|Error/.test(document.getElementById("status").textContent),
    null, { timeout },
  );
  const status = await page.textContent("#status");
  if (!status.startsWith("connected")) throw new Error(`page status: ${status}`);
  return status;
}
