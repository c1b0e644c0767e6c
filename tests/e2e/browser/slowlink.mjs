// Loads a UI through an emulated slow link the way a user does, for tests/e2e/test_70_slow_link.py:
// the login page, a login, the map, then a stay on the map while CoT arrives. Measures with
// Chromium's own network events (CDP): bytes received per request (encodedDataLength: headers
// and body as they came off the connection, before decompression), the protocol of every
// response, the time to the map's first render, and every engine.io session the page opens
// (a second one means the live session dropped and socket.io-client reconnected).
//
// Arguments: --url BASE --ui ots|testpage --user U --password P --stay MS
//            [--transport any|polling] [--chromium PATH] [--timeout MS]
//   --transport polling  the page's WebSockets are refused in the browser, as on a network path
//                  that does not carry them: socket.io-client stays on long-polling.
//   --ui ots       OpenTAKServer-UI: /login (Username, Password, Login), /dashboard, the Map
//                  link, rendered when Leaflet's container is on the page.
//   --ui testpage  tests/e2e/browser/ui/index.html: rendered when its status says connected.
// Output, one JSON object per line:
//   {"event":"rendered", "ms": N, "ms_login_page": N, "bytes": N, "requests": N, "protocols": {...}}
//   {"event":"done", "sessions": N, "ws_opened": N, "ws_closed": N, "socketio_events": N, ...}
//   or {"event":"error", ...}
import { launch, loginTestPage } from "./chromium.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, v, i, a) => (i % 2 === 0 ? [...acc, [v.replace(/^--/, ""), a[i + 1]]] : acc), []),
);
const timeout = Number(args.timeout || 10000);
const stay = Number(args.stay || 0);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const base = new URL(args.url);

let context;
const consoleLog = [];
const net = {
  bytes: 0, requests: 0, protocols: {}, sessions: 0, handshakes: [], wsOpened: 0, wsClosed: 0,
  socketioEvents: 0, closePackets: 0, blocked: 0,
};
const since = performance.now();
const at = () => Math.round(performance.now() - since);
// An engine.io packet stream (a polling body or a WebSocket text frame): count Socket.IO events
// ("42…") and server CLOSE packets ("1").
const countPackets = (text) => {
  for (const p of text.split("\x1e")) {
    if (p.startsWith("42")) net.socketioEvents += 1;
    if (p === "1") net.closePackets += 1;
  }
};
const isEngineIo = (url) => url.pathname.startsWith("/socket.io/") && url.searchParams.has("EIO");
try {
  const launched = await launch(args.chromium, timeout);
  context = launched.context;
  const page = launched.page;
  page.on("console", (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLog.push(`pageerror: ${e.message}`));
  // Loopback only: the map's tile servers (OpenStreetMap, Google) and anything else off this
  // machine are refused, so the figures are the UI's and OTS's alone.
  await page.route(
    (url) => url.origin !== base.origin,
    (route) => { net.blocked += 1; return route.abort("blockedbyclient"); },
  );
  if (args.transport === "polling") {
    await page.routeWebSocket(/\/socket\.io\//, (ws) => ws.close({ code: 4000, reason: "no WebSocket on this path" }));
  }
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", ({ response }) => {
    const p = response.protocol || "unknown";
    net.protocols[p] = (net.protocols[p] || 0) + 1;
  });
  cdp.on("Network.loadingFinished", ({ encodedDataLength }) => {
    net.bytes += encodedDataLength;
    net.requests += 1;
  });
  cdp.on("Network.requestWillBeSent", ({ request }) => {
    const url = new URL(request.url);
    if (isEngineIo(url) && !url.searchParams.has("sid")) {
      net.sessions += 1;
      net.handshakes.push({ ms: at(), transport: url.searchParams.get("transport") });
    }
  });
  cdp.on("Network.webSocketCreated", () => { net.wsOpened += 1; });
  cdp.on("Network.webSocketClosed", () => { net.wsClosed += 1; });
  cdp.on("Network.webSocketFrameReceived", ({ response }) => {
    net.bytes += response.payloadData.length;
    countPackets(response.payloadData);
  });
  page.on("response", async (r) => {
    const url = new URL(r.url());
    if (!isEngineIo(url) || r.request().method() !== "GET") return;
    try { countPackets(await r.text()); } catch { /* a body the page no longer holds */ }
  });

  const t0 = performance.now();
  let loginPage;
  if (args.ui === "ots") {
    await page.goto(new URL("/login", base).href, { timeout, waitUntil: "commit" });
    await page.getByPlaceholder("Username").waitFor({ state: "visible", timeout });
    loginPage = performance.now() - t0;
    await page.getByPlaceholder("Username").fill(args.user);
    await page.getByPlaceholder("Your password").fill(args.password);
    await page.getByRole("button", { name: "Login" }).click();
    await page.waitForURL("**/dashboard", { timeout });
    await page.locator('a[href="/map"]').first().click({ timeout });
    await page.locator(".leaflet-container").first().waitFor({ state: "visible", timeout });
  } else {
    // The form is on the page before the script that logs in is: wait for the whole page.
    await page.goto(base.href, { timeout, waitUntil: "load" });
    loginPage = performance.now() - t0;
    await loginTestPage(page, args.user, args.password, timeout);
  }
  const ms = performance.now() - t0;
  out({
    event: "rendered", ms, ms_login_page: loginPage, bytes: net.bytes, requests: net.requests,
    protocols: net.protocols, blocked: net.blocked,
  });

  // The stay: sessions opened after this line are reconnects. Bounded by --stay.
  const sessionsAtRender = net.sessions;
  const eventsAtRender = net.socketioEvents;
  await new Promise((resolve) => setTimeout(resolve, stay));
  out({
    event: "done", sessions: net.sessions, sessions_during_stay: net.sessions - sessionsAtRender,
    handshakes: net.handshakes, ws_opened: net.wsOpened, ws_closed: net.wsClosed,
    socketio_events: net.socketioEvents, socketio_events_during_stay: net.socketioEvents - eventsAtRender,
    close_packets: net.closePackets, bytes: net.bytes, requests: net.requests, protocols: net.protocols,
  });
} catch (e) {
  out({ event: "error", error: String((e && e.stack) || e), console: consoleLog.slice(-30), net });
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
}
