// The option group that says how to read the source file (migrate, verify): --layout forces a
// layout, --map (with --map-* overrides) describes any other table, --user-from chooses what
// becomes user_id. Shared so that verify walks the source exactly as migrate read it.
import { Option, type Command } from 'commander';
import { LAYOUT_NAMES, loadColumnMap, MAP_ENCODINGS, parseUserFrom, type ColumnMap, type MapEncoding } from '../source/layouts/index.js';
import type { OpenSourceOptions } from '../source/reader.js';

export interface SourceLayoutFlags {
  layout?: string;
  map?: string;
  mapTable?: string;
  mapContent?: string;
  mapEmbedding?: string;
  mapUser?: string;
  mapEncoding?: MapEncoding;
  userFrom?: string;
}

export function sourceLayoutOptions(cmd: Command): Command {
  return cmd
    .option('--layout <name>', `read the file as this layout: ${LAYOUT_NAMES.join(', ')} (default: detected from its tables)`)
    .option('--map <file>', 'JSON mapping of another table or a read-only SELECT: table|query, id, user, content, embedding, metadata, created_at, updated_at, encoding, see MIGRATION.md (default: none, the layout is detected)')
    .option('--map-table <name>', 'with or without --map: the table to read (default: the map file\'s)')
    .option('--map-content <col>', 'with or without --map: the column holding the memory text (default: the map file\'s)')
    .option('--map-embedding <col>', 'with or without --map: the column holding the vector (default: the map file\'s)')
    .option('--map-user <col>', 'with or without --map: the column holding the user id (default: the map file\'s)')
    .addOption(new Option('--map-encoding <enc>', 'with or without --map: how vectors are stored (default auto: sniffed per row)').choices([...MAP_ENCODINGS]))
    .option(
      '--user-from <what>',
      "what becomes user_id: column (the layout's user column), collection, partition (sqlite-vec partition key), metadata:<key>, const:<value> (default: the layout's, see README)",
    );
}

/** The reader options the flags ask for (an invalid --map or --user-from is exit 2). */
export function sourceOpenOptions(flags: SourceLayoutFlags): OpenSourceOptions {
  const opts: OpenSourceOptions = {};
  if (flags.layout !== undefined) opts.layout = flags.layout;
  const overrides: ColumnMap = {};
  if (flags.mapTable !== undefined) overrides.table = flags.mapTable;
  if (flags.mapContent !== undefined) overrides.content = flags.mapContent;
  if (flags.mapEmbedding !== undefined) overrides.embedding = flags.mapEmbedding;
  if (flags.mapUser !== undefined) overrides.user = flags.mapUser;
  if (flags.mapEncoding !== undefined) overrides.encoding = flags.mapEncoding;
  if (flags.map !== undefined || Object.keys(overrides).length > 0) opts.map = loadColumnMap(flags.map, overrides);
  if (flags.userFrom !== undefined) opts.userFrom = parseUserFrom(flags.userFrom);
  return opts;
}

/** The reader options a committed run recorded in the ledger (verify reads the file the same way). */
export function sourceOptionsFromLedger(options: Record<string, unknown>): OpenSourceOptions {
  const opts: OpenSourceOptions = {};
  const source = options['source'] as { layout?: unknown; map?: unknown; userFrom?: unknown } | undefined;
  if (!source || typeof source !== 'object') return opts;
  if (typeof source.layout === 'string' && source.layout !== 'map' && source.layout !== 'memories' && source.layout !== 'empty') opts.layout = source.layout;
  if (source.map && typeof source.map === 'object') opts.map = source.map as ColumnMap;
  if (typeof source.userFrom === 'string') opts.userFrom = parseUserFrom(source.userFrom);
  return opts;
}
