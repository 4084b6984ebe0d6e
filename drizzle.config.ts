// drizzle-kit: `npx drizzle-kit generate` writes storage/archive/migrations from the schema.
import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  schema: './storage/archive/schema.ts',
  out: './storage/archive/migrations',
});
