// The write-up's Worker: Hono routes over Prisma Client with withAccelerate(), reaching
// PostgreSQL through an Accelerate endpoint (poolgate's, or Prisma's hosted one) named by
// DATABASE_URL. Nothing here knows which: only the URL differs.
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { withAccelerate } from '@prisma/extension-accelerate';
import { Level, Prisma, PrismaClient } from './generated/prisma/client';

type Bindings = { DATABASE_URL: string };
type Variables = { prisma: ReturnType<typeof connect> };

// Cached list reads: fresh for 60 s, then served stale for up to 60 s more while they are
// refreshed; tagged so that POST /logs/invalidate can drop them.
const LIST_CACHE = { ttl: 60, swr: 60, tags: ['logs'] };

// `$accelerate.invalidate` posts to the endpoint named by a prisma+postgres://localhost URL,
// but to Prisma's hosted service for any prisma://HOST URL: this sends it to HOST instead.
const HOSTED = 'https://accelerate.prisma-data.net';
function toOwnEndpoint(accelerateUrl: string): typeof fetch {
  const own = new URL(accelerateUrl.replace(/^prisma(\+postgres)?:/, 'https:')).origin;
  return (input, init) =>
    fetch(typeof input === 'string' ? input.replace(HOSTED, own) : input, init);
}

function connect(accelerateUrl: string) {
  return new PrismaClient({ accelerateUrl }).$extends(
    withAccelerate({ fetch: toOwnEndpoint(accelerateUrl) }),
  );
}

const app = new Hono<{ Bindings: Bindings; Variables: Variables }>();

app.use(async (c, next) => {
  c.set('prisma', connect(c.env.DATABASE_URL));
  await next();
});

// The demo of the write-up: each visit is logged, and the row comes back as JSON.
app.get('/', async (c) => {
  const logged = await c.var.prisma.log.create({
    data: {
      level: Level.Info,
      message: `${c.req.method} ${c.req.url}`,
      meta: { headers: Object.fromEntries(c.req.raw.headers) },
    },
  });
  return c.json({ logged });
});

app.get('/logs', async (c) => {
  const { data: logs, info } = await c.var.prisma.log
    .findMany({ orderBy: { id: 'desc' }, take: 20, cacheStrategy: LIST_CACHE })
    .withAccelerateInfo();
  return c.json({ logs, cacheStatus: info?.cacheStatus ?? null });
});

app.get('/logs/:id{[0-9]+}', async (c) => {
  const log = await c.var.prisma.log.findUnique({ where: { id: Number(c.req.param('id')) } });
  if (!log) throw new HTTPException(404, { message: 'no such log' });
  return c.json(log);
});

app.post('/logs', async (c) => {
  const body = await c.req.json().catch(() => null);
  const level = body?.level ?? Level.Info;
  if (typeof body?.message !== 'string' || !(level in Level)) {
    throw new HTTPException(400, { message: 'expected {"message": string, "level"?: Info|Warn|Error}' });
  }
  const log = await c.var.prisma.log.create({
    data: { level, message: body.message, meta: body.meta ?? {} },
  });
  return c.json(log, 201);
});

app.post('/logs/invalidate', async (c) => {
  try {
    await c.var.prisma.$accelerate.invalidate({ tags: LIST_CACHE.tags });
  } catch (error) {
    // the extension throws a plain Error naming the endpoint's answer
    console.error('invalidate failed', error);
    return c.json({ error: 'the endpoint refused to invalidate' }, 502);
  }
  return c.json({ invalidated: LIST_CACHE.tags });
});

app.notFound((c) => c.json({ error: 'not found' }, 404));

// The one place an error becomes a response.
app.onError((error, c) => {
  if (error instanceof HTTPException) {
    return c.json({ error: error.message }, error.status);
  }
  if (error instanceof Prisma.PrismaClientKnownRequestError) {
    console.error('database error', error.code, error.message);
    return c.json({ error: 'database error', code: error.code }, 502);
  }
  console.error('unexpected error', error);
  return c.json({ error: 'internal error' }, 500);
});

export default app;
