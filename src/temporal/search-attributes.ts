import { temporal } from '@temporalio/proto';

/** Search attributes the workflows set so operators can filter runs (Web UI, `temporal workflow list`). */
export const SEARCH_ATTRIBUTES = { StategridPipelineId: 'Keyword', StategridStatDate: 'Keyword' } as const;

type OperatorService = {
  listSearchAttributes(req: {
    namespace: string;
  }): Promise<{ customAttributes?: Record<string, unknown> | null }>;
  addSearchAttributes(req: {
    namespace: string;
    searchAttributes: Record<string, temporal.api.enums.v1.IndexedValueType>;
  }): Promise<unknown>;
};

const KEYWORD = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;
const PERMISSION_DENIED = 7;

export class SearchAttributesMissingError extends Error {
  constructor(namespace: string, missing: string[], cause: string) {
    const names = missing.join(', ');
    super(
      `Temporal namespace ${namespace} lacks the search attributes ${names} and refused to create them (${cause}). ` +
        `Ask an operator to create them as Keyword attributes: ` +
        missing
          .map(
            (n) =>
              `temporal operator search-attribute create --namespace ${namespace} --name ${n} --type Keyword`,
          )
          .join('; ') +
        ` (on Temporal Cloud: tcld namespace search-attributes add, or the Cloud UI); the pipeline needs them to run.`,
    );
    this.name = 'SearchAttributesMissingError';
  }
}

/**
 * Registers our search attributes in the namespace unless they are there already: any server works, not only the
 * embedded dev server started with them. A server that refuses (no admin permission, Temporal Cloud) gets a
 * message naming what to create.
 */
export async function ensureSearchAttributes(
  operator: OperatorService,
  namespace: string,
): Promise<string[]> {
  const { customAttributes } = await operator.listSearchAttributes({ namespace });
  const missing = Object.keys(SEARCH_ATTRIBUTES).filter((name) => !customAttributes?.[name]);
  if (!missing.length) return [];
  try {
    await operator.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((name) => [name, KEYWORD])),
    });
  } catch (err) {
    const code = (err as { code?: number }).code;
    const detail = err instanceof Error ? err.message : String(err);
    // Another client registering the same names at the same moment is fine.
    if (/already exists/i.test(detail)) return [];
    throw new SearchAttributesMissingError(
      namespace,
      missing,
      code === PERMISSION_DENIED ? 'permission denied' : detail,
    );
  }
  return missing;
}
