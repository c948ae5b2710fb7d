// What every script here shares: the generated client, built as an app built for
// Accelerate builds it, and how a result or an error is printed for the test.
//   config (argv[2], JSON): {url, client}: `url` is the prisma+postgres://localhost:PORT/
//   ?api_key=KEY URL; `client` the path of the client.ts that `prisma generate` wrote (a
//   user writes `import { PrismaClient } from './generated/client.ts'`).
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { withAccelerate } from '@prisma/extension-accelerate';

export const config = JSON.parse(process.argv[2]);
const generated = await import(pathToFileURL(config.client).href);
export const { Prisma, Role } = generated;

export const prisma = new generated.PrismaClient({ accelerateUrl: config.url }).$extends(
  withAccelerate(),
);

/** The parts of a client error a test asserts on (everything the app could read). */
export function describe(error) {
  return {
    name: error?.name ?? null,
    code: error?.code ?? null,
    message: String(error?.message ?? error),
    meta: error?.meta ?? null,
  };
}

/** `work()`'s result, or what it threw: one failed step does not hide the others. */
export async function attempt(work) {
  try {
    return { ok: await work() };
  } catch (error) {
    return { error: describe(error) };
  }
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Ask the test to do `step` (say, change a row behind the client's back over a direct
 * connection) and wait until it says it is done: one JSON line out, one line back. */
export async function pause(step) {
  console.log(JSON.stringify({ pause: step }));
  await lines.next();
}

/** The one JSON document the test reads: BigInt as a string, bytes as hex. */
export function print(out) {
  const text = JSON.stringify(out, (_key, value) => {
    if (typeof value === 'bigint') return value.toString();
    if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
    return value;
  });
  console.log(text);
  process.exit(0); // stdin stays open for pause(); nothing else is pending
}
