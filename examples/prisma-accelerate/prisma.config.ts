// The CLI's settings. The CLI (migrate) uses the DIRECT database URL, from the
// environment or .env; the Worker never sees it (its DATABASE_URL is the Accelerate one,
// from wrangler.toml's [vars] or .dev.vars). `prisma generate` needs no URL at all.
import { defineConfig } from 'prisma/config';

try {
  process.loadEnvFile(); // .env, when there is one
} catch {
  // no .env: the environment alone
}

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DIRECT_URL ?? '' },
});
