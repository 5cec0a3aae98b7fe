// SQL identifiers as SQLite and PostgreSQL both read them: in double quotes, a quote doubled.
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
