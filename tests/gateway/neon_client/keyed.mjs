// Neon's driver, unmodified, against a gateway behind TLS and an API key: the key goes
// in its authToken option (sent as Authorization: Bearer), the password stays in the URL.
// Usage: node keyed.mjs <gateway base URL> <connection string> <API key>; prints JSON.
import { neon, neonConfig } from '@neondatabase/serverless';

const [gatewayUrl, connectionString, apiKey] = process.argv.slice(2);
neonConfig.fetchEndpoint = () => `${gatewayUrl}/sql`;
const out = {};
try {
  const sql = neon(connectionString, { authToken: apiKey });
  out.rows = await sql`SELECT 1 AS one`;
} catch (error) {
  // the reason sits a few causes down (NeonDbError -> fetch failed -> the TLS error)
  const reasons = [];
  for (let e = error; e; e = e.sourceError ?? e.cause) {
    reasons.push(`${e.name ?? ''} ${e.code ?? ''} ${e.message ?? e}`.trim());
    if (reasons.length > 6) break;
  }
  out.error = reasons.join(' <- ');
}
console.log(JSON.stringify(out));
