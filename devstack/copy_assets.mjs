// Copies the API explorer's third-party files (npm swagger-ui-dist, pinned in
// package.json) into public/docs/vendor, which Workers static assets serve. Run by
// wrangler before dev and deploy (wrangler.toml [build]) and by ./dev up; the copies
// are not committed.
import { copyFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const source = join(root, "node_modules", "swagger-ui-dist");
const target = join(root, "public", "docs", "vendor");
if (!existsSync(source)) {
  console.error("copy_assets: node_modules/swagger-ui-dist is missing: run `npm ci` first");
  process.exit(1);
}
mkdirSync(target, { recursive: true });
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"]) {
  copyFileSync(join(source, name), join(target, name));
}
