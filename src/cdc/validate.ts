import type { Row, SourceTable } from './changes';

/** Validity rules (docs/data-semantics.md#validity); returns why a row is invalid, or null when it is valid. */
const NUMERIC_12_2 = /^-?\d{1,10}(\.\d{1,2})?$/;

function invalidAmount(name: string, v: string | null): string | null {
  if (v === null) return `${name} is null`;
  if (v === 'NaN' || !NUMERIC_12_2.test(v)) return `${name} is not a NUMERIC(12,2) value`;
  if (v.startsWith('-') && !/^-0+(\.0+)?$/.test(v)) return `${name} is negative`;
  return null;
}

export function consumptionInvalidReason(row: Row): string | null {
  if (row.user_id === null || row.user_id === undefined) return 'user_id is null';
  if (row.consumption_date === null || row.consumption_date === undefined) return 'consumption_date is null';
  return (
    invalidAmount('consumption_amount', row.consumption_amount ?? null) ??
    invalidAmount('consumption_cost', row.consumption_cost ?? null)
  );
}

export function userInvalidReason(row: Row): string | null {
  if (row.user_name === null || row.user_name === undefined || row.user_name.trim() === '') {
    return 'user_name is null or blank';
  }
  if (row.region_id === null || row.region_id === undefined) return 'region_id is null';
  if (row.region_name === null || row.region_name === undefined) return 'region_name is null';
  return null;
}

export function invalidReason(table: SourceTable, row: Row): string | null {
  return table === 'power_user' ? userInvalidReason(row) : consumptionInvalidReason(row);
}
