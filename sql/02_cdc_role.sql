-- Least-privilege role for capture: REPLICATION plus SELECT on the two source tables, nothing else.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stategrid_cdc') THEN
    CREATE ROLE stategrid_cdc WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM stategrid_cdc;
GRANT USAGE ON SCHEMA public TO stategrid_cdc;
GRANT SELECT ON power_user, power_consumption TO stategrid_cdc;
