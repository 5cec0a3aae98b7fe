// Prompt fragments: the seven defaults the app shipped with, and the mapping of the
// source's `system_prompts` rows (which lived in the memories table) to fragment rows.
import { contentHash } from '../source/canonical.js';
import type { SourceRow } from '../source/types.js';

export type ContextTier = 'core' | 'standard' | 'full';

export interface FragmentRow {
  id: string;
  category: string;
  priority: number;
  content: string;
  contentHash: string;
  tags: string[];
  agentType: string | null;
  contextTier: ContextTier;
  isActive: boolean;
  /** JSON text, parsed by PostgreSQL itself so numbers stay exact. */
  metadata: string;
  createdAt: Date | null;
  updatedAt: Date | null;
}

const DEFAULTS: [category: string, priority: number, agentType: string | null, tier: ContextTier, content: string][] = [
  ['general_guidelines', 10, 'general', 'core', 'Be accurate, concise and helpful. Confirm details before acting on a customer\'s behalf, and say plainly when you do not know something.'],
  ['sales_guidelines', 9, 'sales', 'core', 'Recommend products that fit the customer\'s stated needs and budget. Never pressure; explain trade-offs honestly and offer alternatives.'],
  ['product_guidelines', 8, 'products', 'standard', 'Describe products using the catalogue\'s facts only: specifications, availability and compatibility. Flag anything you are unsure of.'],
  ['pricing_guidelines', 8, 'pricing', 'standard', 'Quote current prices and active promotions only. Mention taxes and shipping where they apply, and never invent discounts.'],
  ['communication_style', 7, null, 'standard', 'Use a warm, professional tone. Prefer short paragraphs and lists, and match the customer\'s language and level of detail.'],
  ['error_handling', 6, null, 'standard', 'When a tool or lookup fails, say so, explain what you tried, and offer a next step instead of guessing.'],
  ['memory_usage', 5, null, 'full', 'Use remembered preferences and past conversations to personalise answers, but never reveal one customer\'s memories to another.'],
];

export function defaultFragments(): FragmentRow[] {
  return DEFAULTS.map(([category, priority, agentType, contextTier, content]) => ({
    id: `default:${category}`,
    category,
    priority,
    content,
    contentHash: contentHash(content),
    tags: ['default'],
    agentType,
    contextTier,
    isActive: true,
    metadata: '{"source": "memory-migrate default"}',
    createdAt: null,
    updatedAt: null,
  }));
}

const PRIORITY: Record<string, number> = { high: 10, medium: 5, low: 1 };
const TIERS = new Set<ContextTier>(['core', 'standard', 'full']);

/** A `system_prompts` row of the source as a prompt_fragments row. */
export function fragmentFromSource(row: SourceRow): FragmentRow {
  const md = row.metadata.fields;
  const rawPriority = md['priority'];
  const priority =
    typeof rawPriority === 'number' && Number.isFinite(rawPriority)
      ? Math.round(rawPriority)
      : (PRIORITY[String(rawPriority ?? '').toLowerCase()] ?? 5);
  const agent = typeof md['agent_type'] === 'string' ? (md['agent_type'] as string) : null;
  const tierValue = String(md['context_tier'] ?? md['tier'] ?? 'standard').toLowerCase() as ContextTier;
  const tags = Array.isArray(md['tags']) ? (md['tags'] as unknown[]).map(String) : [];
  return {
    id: row.id,
    category: typeof md['category'] === 'string' && md['category'] ? (md['category'] as string).slice(0, 100) : 'general',
    priority,
    content: row.content,
    contentHash: contentHash(row.content),
    tags,
    agentType: agent === null || agent.toLowerCase() === 'all' ? null : agent.slice(0, 100),
    contextTier: TIERS.has(tierValue) ? tierValue : 'standard',
    isActive: md['is_active'] === false ? false : true,
    metadata: row.metadata.json,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}
