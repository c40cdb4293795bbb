/** A DWS partition: one region's day (region stats and the ranking are computed per partition). */
export type Partition = { stat_date: string; region_id: number };

/** A partition as `day/region`: what verify reports and repair records, and what sets of partitions key by. */
export const partitionKey = (p: Partition) => `${p.stat_date}/${p.region_id}`;

/** The partition a `day/region` key names. */
export function parsePartitionKey(key: string): Partition {
  const [stat_date, region] = key.split('/');
  return { stat_date, region_id: Number(region) };
}
