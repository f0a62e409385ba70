-- Khala least-privilege Postgres roles (DESIGN invariant 6: each service owns
-- one schema and role; the gateway reads schema khala read-only).
--
--   role             owns schema   may use
--   khala_control    control       control only
--   khala_runtime    runtime       runtime only
--   khala_projector  khala         khala only
--   khala_gateway    (none)        USAGE + SELECT on khala (now and future tables), read-only sessions
--
-- Idempotent: run it on every deploy, before the migrations (`khala-<svc> migrate`
-- then runs as the owning role). Run it as a superuser, or as a role with
-- CREATEROLE that owns the database, connected to the Khala database:
--
--   psql "$KHALA_ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 \
--     -v control_password="$PG_CONTROL_PASSWORD" -v runtime_password="$PG_RUNTIME_PASSWORD" \
--     -v projector_password="$PG_PROJECTOR_PASSWORD" -v gateway_password="$PG_GATEWAY_PASSWORD" \
--     -f deploy/postgres/roles.sql
--
-- Each *_password variable is optional: when it is not set the role's password is
-- left as it is (for IAM / certificate authentication, or passwords managed elsewhere).

\set ON_ERROR_STOP on

-- 1. Login roles with no special attributes.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['khala_control', 'khala_runtime', 'khala_projector', 'khala_gateway'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        END IF;
        EXECUTE format(
            'ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS',
            r);
    END LOOP;
END
$roles$;

\if :{?control_password}
ALTER ROLE khala_control PASSWORD :'control_password';
\endif
\if :{?runtime_password}
ALTER ROLE khala_runtime PASSWORD :'runtime_password';
\endif
\if :{?projector_password}
ALTER ROLE khala_projector PASSWORD :'projector_password';
\endif
\if :{?gateway_password}
ALTER ROLE khala_gateway PASSWORD :'gateway_password';
\endif

-- Session defaults (the pools set search_path too; these cover psql and tools).
ALTER ROLE khala_control SET search_path = control;
ALTER ROLE khala_runtime SET search_path = runtime;
ALTER ROLE khala_projector SET search_path = khala;
ALTER ROLE khala_gateway SET search_path = khala;
ALTER ROLE khala_gateway SET default_transaction_read_only = on;

-- 2. The database: only the Khala roles (and superusers) connect. CREATE on the
-- database is needed by `khala_common.db.migrate`, which runs
-- `CREATE SCHEMA IF NOT EXISTS <schema>` (Postgres checks the privilege even
-- when the schema exists); the gateway never migrates and does not get it.
DO $database$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO khala_control, khala_runtime, khala_projector, khala_gateway',
                   current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO khala_control, khala_runtime, khala_projector',
                   current_database());
END
$database$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- 3. One schema per service, owned by its role.
CREATE SCHEMA IF NOT EXISTS control AUTHORIZATION khala_control;
CREATE SCHEMA IF NOT EXISTS runtime AUTHORIZATION khala_runtime;
CREATE SCHEMA IF NOT EXISTS khala AUTHORIZATION khala_projector;
ALTER SCHEMA control OWNER TO khala_control;
ALTER SCHEMA runtime OWNER TO khala_runtime;
ALTER SCHEMA khala OWNER TO khala_projector;
REVOKE ALL ON SCHEMA control, runtime, khala FROM PUBLIC;

-- Objects created earlier by another role (e.g. migrations once run as the
-- superuser by `make run`) move to the schema's owner, so later migrations,
-- which run as that owner, can alter them.
DO $owners$
DECLARE
    s record;
    o record;
BEGIN
    FOR s IN SELECT * FROM (VALUES ('control', 'khala_control'),
                                   ('runtime', 'khala_runtime'),
                                   ('khala', 'khala_projector')) AS t(schema_name, owner_name) LOOP
        -- tables first: ALTER TABLE also moves their indexes and owned sequences
        FOR o IN SELECT c.relname, c.relkind FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = s.schema_name AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
                   AND pg_get_userbyid(c.relowner) <> s.owner_name LOOP
            EXECUTE format('ALTER %s %I.%I OWNER TO %I',
                           CASE o.relkind WHEN 'v' THEN 'VIEW'
                                          WHEN 'm' THEN 'MATERIALIZED VIEW'
                                          WHEN 'f' THEN 'FOREIGN TABLE'
                                          ELSE 'TABLE' END,
                           s.schema_name, o.relname, s.owner_name);
        END LOOP;
        FOR o IN SELECT c.relname FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = s.schema_name AND c.relkind = 'S'
                   AND pg_get_userbyid(c.relowner) <> s.owner_name LOOP
            EXECUTE format('ALTER SEQUENCE %I.%I OWNER TO %I', s.schema_name, o.relname, s.owner_name);
        END LOOP;
        FOR o IN SELECT p.oid::regprocedure AS signature, p.prokind FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = s.schema_name AND pg_get_userbyid(p.proowner) <> s.owner_name LOOP
            EXECUTE format('ALTER %s %s OWNER TO %I',
                           CASE o.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                           o.signature, s.owner_name);
        END LOOP;
    END LOOP;
END
$owners$;

-- 4. The gateway: read-only on khala, for today's tables and every table the
-- projector's migrations create later.
GRANT USAGE ON SCHEMA khala TO khala_gateway;
GRANT SELECT ON ALL TABLES IN SCHEMA khala TO khala_gateway;
ALTER DEFAULT PRIVILEGES FOR ROLE khala_projector IN SCHEMA khala GRANT SELECT ON TABLES TO khala_gateway;
