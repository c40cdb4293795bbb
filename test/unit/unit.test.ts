import assert from 'node:assert/strict';
import { parsePipelineInput, parseRecomputeInput, parseVerifyInput } from '../../src/activities/inputs';
import { formatLsn, parseLsn } from '../../src/cdc/changes';
import { restartMarkSlotName } from '../../src/cdc/source-admin';
import { consumptionInvalidReason, userInvalidReason } from '../../src/cdc/validate';
import { ConfigError, loadConfig, maskUrl } from '../../src/config';
import { quoteIdent } from '../../src/db/sql';
import { repairPlan } from '../../src/verify/repair';
import { dayCloseInstant, previousLocalDay, watermarkPassed } from '../../src/workflows/window-time';

/** Pure logic: config, validation rules, LSN arithmetic, window time in time zones. */
describe('config', () => {
  it('fails fast naming the bad setting', () => {
    assert.throws(
      () => loadConfig({ STATEGRID_PG_PORT: 'abc' }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.match(e.message, /STATEGRID_PG_PORT/);
        return true;
      },
    );
    const badSettings: [string, string][] = [
      ['STATEGRID_DECODING_PLUGIN', 'decoderbufs'],
      ['STATEGRID_TIME_ZONE', 'Mars/Base'],
      ['STATEGRID_SINK_URL', 'mysql://x'],
      ['STATEGRID_WORKFLOW_TASK_TIMEOUT_MS', '500'],
      ['STATEGRID_WORKFLOW_TASK_TIMEOUT_MS', '5s'],
      ['STATEGRID_DECODING_WORK_MEM_MB', '-1'],
      ['STATEGRID_DECODING_WORK_MEM_MB', '1GB'],
    ];
    for (const [name, value] of badSettings)
      assert.throws(() => loadConfig({ [name]: value }), new RegExp(name), `${name}=${value}`);
  });
  it('derives the documented defaults and masks passwords', () => {
    const cfg = loadConfig({});
    assert.equal(cfg.sourceUrl, 'postgres://postgres:postgres@127.0.0.1:54329/stategrid_db');
    assert.equal(cfg.sinkUrl, cfg.sourceUrl);
    assert.equal(cfg.taskQueue, 'stategrid-cdc');
    assert.equal(cfg.decodingWorkMemMb, 512);
    assert.equal(loadConfig({ STATEGRID_DECODING_WORK_MEM_MB: '0' }).decodingWorkMemMb, 0);
    assert.equal(maskUrl('postgres://u:s3cret@h:1/db'), 'postgres://u:***@h:1/db');
  });
});

describe('validation rules', () => {
  const ok = {
    user_id: '1',
    consumption_date: '2026-11-20 10:00:00',
    consumption_amount: '0.00',
    consumption_cost: '1.50',
  };
  it('accepts valid rows and names the reason for invalid ones', () => {
    assert.equal(consumptionInvalidReason(ok), null);
    assert.match(String(consumptionInvalidReason({ ...ok, consumption_amount: '-0.01' })), /negative/);
    assert.match(String(consumptionInvalidReason({ ...ok, consumption_cost: null })), /null/);
    assert.match(String(consumptionInvalidReason({ ...ok, consumption_amount: 'NaN' })), /NUMERIC/);
    assert.match(String(consumptionInvalidReason({ ...ok, user_id: null })), /user_id/);
    assert.equal(userInvalidReason({ user_name: '张三', region_id: '1', region_name: '北京' }), null);
    assert.match(
      String(userInvalidReason({ user_name: ' \t', region_id: '1', region_name: '北京' })),
      /blank/,
    );
    assert.match(
      String(userInvalidReason({ user_name: 'a', region_id: null, region_name: '北京' })),
      /region_id/,
    );
  });
});

describe('inputs and identifiers', () => {
  it('validates workflow inputs with clear messages', () => {
    const cfg = loadConfig({});
    assert.equal(parsePipelineInput(cfg, {}).slotName, 'stategrid_default');
    assert.throws(() => parsePipelineInput(cfg, { pipelineId: 'x; DROP TABLE y' }), /pipelineId/);
    assert.throws(() => parsePipelineInput(cfg, { batchRows: 0 }), /batchRows/);
    assert.throws(() => parsePipelineInput(cfg, { nope: 1 }), /nope/);
    // The pipeline's workflow task timeout defaults to the setting and is checked like any input.
    const timeout = loadConfig({ STATEGRID_WORKFLOW_TASK_TIMEOUT_MS: '7000' });
    assert.equal(parsePipelineInput(timeout, {}).workflowTaskTimeoutMs, 7000);
    assert.throws(() => parsePipelineInput(cfg, { workflowTaskTimeoutMs: 200_000 }), /workflowTaskTimeoutMs/);
    assert.throws(() => parseRecomputeInput({ date: '2026-02-30x' }), /date/);
    assert.equal(quoteIdent('a"b'), '"a""b"');
    assert.throws(() => quoteIdent(''), /identifier/);
  });
  it('takes verify --repair as a boolean, off by default', () => {
    assert.deepEqual(parseVerifyInput({}), { pipelineId: 'default', layer: 'all', repair: false });
    assert.equal(parseVerifyInput({ repair: true }).repair, true);
    assert.throws(() => parseVerifyInput({ repair: 'yes' }), /repair/);
  });
  it('repairs the source keys behind ODS and DWD differences, and recomputes the DWS partitions found', () => {
    const plan = repairPlan([
      { table: 'ods_power_consumption', keys: ['12', '40'] },
      { table: 'dwd_power_consumption_detail', keys: ['40', '41'] },
      { table: 'dwd_power_user_info', keys: ['7'] },
      { table: 'dws_user_ranking', keys: ['2026-11-20/3'] },
    ]);
    assert.deepEqual(plan.keys, { power_user: ['7'], power_consumption: ['12', '40', '41'] });
    assert.deepEqual(plan.partitions, [{ stat_date: '2026-11-20', region_id: 3 }]);
  });
  it('names the restart-mark slot within 63 characters, one per pipeline slot', () => {
    assert.equal(restartMarkSlotName('stategrid_default'), 'stategrid_default_restart_mark');
    const cfg = loadConfig({});
    const long = (id: string) => parsePipelineInput(cfg, { pipelineId: id }).slotName;
    const a = restartMarkSlotName(long('a'.repeat(47) + 'x'));
    const b = restartMarkSlotName(long('a'.repeat(47) + 'y'));
    assert.ok(a.length <= 63 && b.length <= 63, `${a} / ${b}`);
    assert.match(a, /^[a-z0-9_]+$/);
    assert.notEqual(a, b);
  });
  it('round-trips LSNs', () => {
    assert.equal(formatLsn(parseLsn('1A/FF00AB12')), '1A/FF00AB12');
    assert.ok(parseLsn('1/0') > parseLsn('0/FFFFFFFF'));
  });
});

describe('window time', () => {
  it('closes a day at local midnight plus grace in the configured zone', () => {
    // 2026-11-21 00:00 in Shanghai (UTC+8) is 2026-11-20 16:00 UTC; plus 30 minutes grace.
    assert.equal(
      new Date(dayCloseInstant('2026-11-20', 'Asia/Shanghai', 30)).toISOString(),
      '2026-11-20T16:30:00.000Z',
    );
    assert.equal(
      new Date(dayCloseInstant('2026-03-08', 'America/New_York', 0)).toISOString(),
      '2026-03-09T04:00:00.000Z',
    );
  });
  it('passes the watermark only after the allowed lateness', () => {
    assert.equal(watermarkPassed('2026-11-20', '2026-11-21 00:09:59', 10), false);
    assert.equal(watermarkPassed('2026-11-20', '2026-11-21 00:10:00', 10), true);
  });
  it('derives the previous local day of a schedule time', () => {
    assert.equal(previousLocalDay(Date.parse('2026-11-24T17:00:00Z'), 'Asia/Shanghai'), '2026-11-24');
    assert.equal(previousLocalDay(Date.parse('2026-11-24T15:00:00Z'), 'Asia/Shanghai'), '2026-11-23');
  });
});
