// Runs tests/pyodide/checks.py inside Pyodide (the Worker's interpreter) under Node.js,
// whose global fetch/Request/Response/Headers are the web APIs the workers SDK calls.
// Usage: node harness.mjs <config.json>; prints the checks' results as one JSON line.
import { loadPyodide } from "pyodide";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const pyodide = await loadPyodide();

for (const wheel of config.wheels) {
  pyodide.unpackArchive(new Uint8Array(readFileSync(wheel)), "wheel");
}
const { FS } = pyodide;
const standins = join(here, "..", "..", "devstack", "pyodide_standins");
for (const [mountPoint, hostDir] of [["/standins", standins], ["/src", config.src]]) {
  FS.mkdirTree(mountPoint);
  FS.mount(FS.filesystems.NODEFS, { root: hostDir }, mountPoint);
}
pyodide.globals.set("config_json", JSON.stringify(config));
pyodide.runPython("import sys; sys.path[:0] = ['/standins', '/src']");
await pyodide.runPythonAsync(readFileSync(join(here, "checks.py"), "utf8"));
const results = await pyodide.runPythonAsync("import json; json.dumps(await main(json.loads(config_json)))");
console.log(results);
