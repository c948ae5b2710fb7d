// Drives headless Chromium (Debian's, through playwright-core) over the Worker's API
// explorer, as a person would: open /docs, read the routes it lists, send GET /health
// with "Try it out" and "Execute", read the answer; then open / as a browser does.
// Usage: node explorer.mjs <worker url> <screenshot.png>; prints what it saw as JSON.
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
  const seen = { requests: [] };
  page.on("request", (request) => seen.requests.push(new URL(request.url()).host));
  const docs = await page.goto(`${base}/docs`);
  seen.docsUrl = docs.url();
  await page.waitForSelector(".opblock-summary-path");
  seen.operations = await page.$$eval(".opblock", (blocks) =>
    blocks.map((block) => ({
      method: block.querySelector(".opblock-summary-method").textContent.trim(),
      path: block.querySelector(".opblock-summary-path").getAttribute("data-path"),
    })),
  );
  await page.screenshot({ path: screenshot });
  const health = page.locator(".opblock", { has: page.locator('[data-path="/health"]') });
  await health.locator(".opblock-summary").click();
  await health.locator("button.try-out__btn").click();
  await health.locator("button.execute").click();
  const live = health.locator(".live-responses-table");
  await live.waitFor();
  seen.healthStatus = (await live.locator("tbody .response-col_status").first().textContent()).trim();
  seen.healthBody = await live.locator(".response-col_description pre").first().textContent();
  const index = await page.goto(`${base}/`);
  seen.indexType = index.headers()["content-type"];
  seen.indexTitle = await page.title();
  seen.indexLinks = await page.$$eval("a", (links) => links.map((a) => a.getAttribute("href")));
  seen.favicon = (await page.request.get(`${base}/favicon.ico`)).headers()["content-type"];
  seen.requests = [...new Set(seen.requests)];
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
