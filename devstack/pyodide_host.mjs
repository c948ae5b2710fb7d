// Serves the Worker from Pyodide 314.0.6 (the Worker's interpreter in workerd) under Node.js, with
// the real workers SDK: each HTTP request becomes a JS Request handed to entry.py's
// Default.fetch, whose JS Response is written back. ctx.waitUntil work keeps running after
// the response is sent, as the Workers runtime lets it.
// Usage: node pyodide_host.mjs <config.json>; config: {port, src, standins, wheels, env,
// settle, trivial, assets}; settle (tests only) finishes ctx.waitUntil work before
// answering; trivial (benchmarks only) answers with a fixed JSON body instead of calling
// the Worker, from the host itself ("host": what is left is the host's own HTTP
// handling, which workerd does not bill) or from a trivial Python handler ("python":
// Pyodide's own cost of a request, which any Python Worker pays); assets: the directory
// of wrangler.toml's [assets], served before the Worker.
import { loadPyodide } from "pyodide";
import { createServer } from "node:http";
import { readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = performance.now();
const pyodide = await loadPyodide();
// As pywrangler lays the Worker's packages out (python_modules/) and as workerd adds them
// (site.addsitedir, so .pth files run: the SDK's start-up hooks and package patches).
for (const wheel of config.wheels) {
  pyodide.unpackArchive(new Uint8Array(readFileSync(wheel)), "wheel", {
    extractDir: "/python_modules",
  });
}
const { FS } = pyodide;
for (const [mountPoint, hostDir] of [["/standins", config.standins], ["/src", config.src]]) {
  FS.mkdirTree(mountPoint);
  FS.mount(FS.filesystems.NODEFS, { root: hostDir }, mountPoint);
}
pyodide.runPython(`
import site, sys
sys.path[:0] = ["/standins", "/src"]
site.addsitedir("/python_modules")
`);
// entry.py's Default, as workerd calls it; the SDK's Response carries the JS one
const serve = pyodide.runPython(`
import asyncio

from entry import Default
from _cloudflare import import_patch_manager

import_patch_manager.run_before_first_request()
print("pyodide host: the SDK's start-up patches ran for:", ", ".join(import_patch_manager.APPLIED) or "nothing")


class Context:
    """ctx as the Worker sees it: waitUntil keeps the work (already scheduled) running."""

    def __init__(self):
        self.pending = []

    def waitUntil(self, work):
        self.pending.append(asyncio.ensure_future(work))

    def passThroughOnException(self):
        pass


async def serve(request, env, settle):
    ctx = Context()
    response = await Default(ctx, env).fetch(request)
    if settle:  # tests only: the deferred work is done before the answer
        await asyncio.gather(*ctx.pending, return_exceptions=True)
    return response.js_object

serve
`);
const env = config.env;

// The Worker refuses bodies over 1 MiB (413) and paths over 8 KiB (414); the host reads
// one byte past the first, and lets far longer heads through, so the Worker answers.
const MAX_BODY = 1024 * 1024;
const JSON_TYPE = "application/json; charset=utf-8";
const TRIVIAL_BODY = '{"trivial":true}';
// --trivial python: the cheapest answer a Python handler can give
const trivialPython = pyodide.runPython(`
import js
from pyodide.ffi import to_js


async def trivial(request):
    headers = to_js([["content-type", "${JSON_TYPE}"]])
    return js.Response.new(${JSON.stringify(TRIVIAL_BODY)}, status=200, headers=headers)

trivial
`);

async function readBody(incoming) {
  const chunks = [];
  let size = 0;
  for await (const chunk of incoming) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_BODY) break; // enough to know it is too large; the rest is not read
  }
  return Buffer.concat(chunks).subarray(0, MAX_BODY + 1);
}

// The Fetch API's Request constructor refuses these methods; workerd still hands them to
// the Worker (its requests are not built by that constructor), whose router answers 405
// with the route's own methods. The host builds the Request as GET and gives it the
// method it came with.
const NOT_FETCH_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

// What workerd refuses before any Worker runs, answered with the Worker's JSON error.
// Headers: every line counts as `name: value` and CRLF, all together at most 32 KiB
// (web.MAX_HEADER_BYTES and web.header_block_bytes say the same for the Worker), counted
// on the raw lines before anything is merged, so nothing is ever dropped unseen.
const MAX_HEADER_BYTES = 32 * 1024;

function headerBlockBytes(rawHeaders) {
  let size = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) size += rawHeaders[i].length + rawHeaders[i + 1].length + 4;
  return size;
}

// RFC 3986's host (IP literal or reg-name, percent-encoding well formed) and optional port
// (at most 65535); no user information, path, query or fragment.
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::([0-9]*))?$/;

function validHost(host) {
  const found = HOST.exec(host);
  if (!found || (found[1] && Number(found[1]) > 65535)) return false;
  try {
    new URL(`http://${host}/`);
  } catch {
    return false;
  }
  return true;
}

// The path and query the Worker sees: an origin-form target as sent; an absolute-form
// one (`GET http://host/path HTTP/1.1`) by its path and query. Anything else is null.
function targetPath(target) {
  if (target.startsWith("/")) return target;
  const absolute = /^https?:\/\/[^/?#]*(.*)$/is.exec(target);
  if (!absolute) return null;
  const rest = absolute[1];
  return rest.startsWith("/") ? rest : `/${rest}`;
}

function refusal(incoming) {
  if (headerBlockBytes(incoming.rawHeaders) > MAX_HEADER_BYTES) {
    return [431, "headers_too_large", `the headers must be at most ${MAX_HEADER_BYTES} bytes`];
  }
  const hosts = [];
  for (let i = 0; i < incoming.rawHeaders.length; i += 2) {
    if (incoming.rawHeaders[i].toLowerCase() === "host") hosts.push(incoming.rawHeaders[i + 1]);
  }
  if (hosts.length === 0 && incoming.httpVersion !== "1.0") {
    return [400, "bad_request", "an HTTP/1.1 request needs a Host header"];
  }
  if (hosts.length > 1) return [400, "bad_request", "the request has more than one Host header"];
  if (hosts.length === 1 && !validHost(hosts[0])) {
    return [400, "bad_request", "the Host header is not a valid host[:port]"];
  }
  if (targetPath(incoming.url) === null) {
    return [400, "bad_request", "the request target must be a path (or an absolute http URL)"];
  }
  return null;
}

function answerError(outgoing, status, code, message, headers = {}) {
  const body = JSON.stringify({
    error: { code, message, details: null, request_id: crypto.randomUUID() },
  });
  outgoing.writeHead(status, { "content-type": JSON_TYPE, ...headers });
  outgoing.end(body);
}

// Workers static assets ([assets] in wrangler.toml), before the Worker, with the rules of
// devstack/static_assets.py: GET/HEAD of a file under public/; /dir/ serves
// dir/index.html and /dir redirects there; anything else goes to the Worker.
const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".ico": "image/x-icon",
  ".png": "image/png",
  ".json": "application/json",
};

function findAsset(method, url) {
  if (method !== "GET" && method !== "HEAD") return null;
  const [rawPath, query] = url.split(/\?(.*)/s);
  let path;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    return null;
  }
  const parts = path.split("/").filter((part) => part);
  if (parts.some((part) => part === "." || part === ".." || part.includes("\0"))) return null;
  let target = join(config.assets, ...parts);
  if (path.endsWith("/")) {
    target = join(target, "index.html");
  } else if (isDirectory(target) && isFile(join(target, "index.html"))) {
    return { status: 307, headers: { location: `${rawPath}/${query ? `?${query}` : ""}` }, body: null };
  }
  if (!isFile(target)) return null;
  const type = CONTENT_TYPES[extname(target)] ?? "text/plain; charset=utf-8";
  return { status: 200, headers: { "content-type": type }, body: readFileSync(target) };
}

// A name no file can have (ENAMETOOLONG, say) is no asset: the Worker answers it.
function stat(path) {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

function isFile(path) {
  return stat(path)?.isFile() ?? false;
}

function isDirectory(path) {
  return stat(path)?.isDirectory() ?? false;
}

async function handle(incoming, outgoing) {
  const refused = refusal(incoming);
  if (refused) {
    incoming.resume();
    return answerError(outgoing, ...refused, { connection: "close" });
  }
  const target = targetPath(incoming.url);
  const asset = findAsset(incoming.method, target);
  if (asset) {
    incoming.resume();
    outgoing.writeHead(asset.status, asset.headers);
    outgoing.end(incoming.method === "HEAD" ? undefined : (asset.body ?? undefined));
    return;
  }
  const method = incoming.method;
  const standIn = NOT_FETCH_METHODS.has(method);
  const body = standIn ? Buffer.alloc(0) : await readBody(incoming);
  if (standIn) incoming.resume();
  const headers = new Headers();
  for (let i = 0; i < incoming.rawHeaders.length; i += 2) {
    headers.append(incoming.rawHeaders[i], incoming.rawHeaders[i + 1]);
  }
  // The URL as workerd gives it: the validated Host (the listener's address for an
  // HTTP/1.0 request without one) and the target's path and query exactly as sent (the
  // Fetch API's URL parser would re-encode and resolve them; the Worker must see them
  // as the CPython host passes them).
  const url = `http://${incoming.headers.host ?? `127.0.0.1:${config.port}`}${target}`;
  const request = new Request(url, {
    method: standIn ? "GET" : method,
    headers,
    body: method === "GET" || method === "HEAD" || standIn || body.length === 0 ? undefined : body,
  });
  Object.defineProperty(request, "url", { value: url, enumerable: true });
  if (standIn) Object.defineProperty(request, "method", { value: method, enumerable: true });
  let response;
  if (config.trivial === "host") {
    response = new Response(TRIVIAL_BODY, { status: 200, headers: { "content-type": JSON_TYPE } });
  } else if (config.trivial === "python") {
    response = await trivialPython(request);
  } else {
    response = await serve(request, env, Boolean(config.settle));
  }
  const payload = method === "HEAD" ? null : Buffer.from(await response.arrayBuffer());
  const answerHeaders = Object.fromEntries(response.headers.entries());
  outgoing.writeHead(response.status, answerHeaders);
  outgoing.end(payload ?? undefined);
}

// maxHeadersCount 0: Node keeps every header line (by default it drops all past the
// 2,000th); the 32 KiB rule above refuses the request instead.
const server = createServer({ maxHeaderSize: 1024 * 1024, requireHostHeader: false }, (incoming, outgoing) => {
  handle(incoming, outgoing).catch((error) => {
    console.error(`pyodide host: ${error?.stack ?? error}`);
    if (!outgoing.headersSent) {
      outgoing.writeHead(500, { "content-type": JSON_TYPE });
    }
    outgoing.end('{"error":{"code":"internal_error","message":"the host failed","details":null}}');
  });
});
// What Node's parser refuses is answered as the Worker answers a bad request: JSON.
server.on("clientError", (error, socket) => {
  if (!socket.writable) return;
  const status = error.code === "HPE_HEADER_OVERFLOW" ? 431 : 400;
  const body = JSON.stringify({
    error: {
      code: status === 431 ? "headers_too_large" : "bad_request",
      message: "the request is not valid HTTP/1.1",
      details: null,
      request_id: crypto.randomUUID(),
    },
  });
  socket.end(
    `HTTP/1.1 ${status} ${status === 431 ? "Request Header Fields Too Large" : "Bad Request"}\r\n` +
      `content-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
});
server.maxHeadersCount = 0;
server.listen(config.port, "127.0.0.1", () => {
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  console.log(`pyodide host: listening on http://127.0.0.1:${config.port}/ (ready in ${seconds} s)`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
