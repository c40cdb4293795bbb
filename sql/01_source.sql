-- Source tables of the original Flink CDC example (docs/data-semantics.md), plus the publication the capture reads.
CREATE TABLE IF NOT EXISTS power_user (
  user_id      BIGINT PRIMARY KEY,
  user_name    VARCHAR(100),
  usage_type   VARCHAR(20),
  region_id    INT,
  region_name  VARCHAR(50),
  update_time  TIMESTAMP(3) DEFAULT now()
);

CREATE TABLE IF NOT EXISTS power_consumption (
  consumption_id     BIGINT PRIMARY KEY,
  user_id            BIGINT,
  consumption_amount NUMERIC(12, 2),
  consumption_cost   NUMERIC(12, 2),
  consumption_date   TIMESTAMP(3)
);

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'stategrid_pub') THEN
    CREATE PUBLICATION stategrid_pub FOR TABLE power_user, power_consumption;
  END IF;
END $$;
