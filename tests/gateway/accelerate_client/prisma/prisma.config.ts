// Prisma 7 reads its settings here. `generate` needs only the schema; the connection is
// the client's `accelerateUrl`, given in code, not a datasource URL.
import { defineConfig } from 'prisma/config';

export default defineConfig({ schema: 'schema.prisma' });
