-- Times are Unix seconds (double precision): the daemon's injected clock decides
-- "now", never the database's, so tests with a Clock and several daemons agree.

CREATE TABLE farmers (
    id                 bigserial PRIMARY KEY,          -- registration order
    btc_addr           text NOT NULL UNIQUE,
    payout_addr        text NOT NULL,
    height             bigint NOT NULL DEFAULT 0,
    reg_time           double precision NOT NULL,
    last_seen          double precision NOT NULL,
    last_ip            text,                            -- never published
    bandwidth_upload   double precision NOT NULL DEFAULT 0,
    bandwidth_download double precision NOT NULL DEFAULT 0
);

-- "online since T" is a range scan on this index.
CREATE INDEX farmers_last_seen ON farmers (last_seen);

-- Online seconds per farmer per UTC day; uptime is their sum over a window.
CREATE TABLE uptime_days (
    farmer_id      bigint NOT NULL REFERENCES farmers (id) ON DELETE CASCADE,
    day            date NOT NULL,
    online_seconds double precision NOT NULL,
    PRIMARY KEY (farmer_id, day)
);
CREATE INDEX uptime_days_day ON uptime_days (day);

-- The primary key is what makes a second audit of one block by one farmer fail,
-- however the two requests race.
CREATE TABLE audits (
    farmer_id    bigint NOT NULL REFERENCES farmers (id) ON DELETE CASCADE,
    block        bigint NOT NULL,
    response     text NOT NULL,
    submitted_at double precision NOT NULL,
    PRIMARY KEY (farmer_id, block)
);

CREATE TABLE totals_history (
    at             double precision PRIMARY KEY,
    online_farmers integer NOT NULL,
    total_tb       double precision NOT NULL,
    total_height   bigint NOT NULL
);

-- Record contacts (pings, heights, bandwidth, audits) for many farmers in one
-- statement, so concurrent pings share one commit. A contact moves last_seen when
-- it comes at least p_min_gap after the previous one (the ping throttle; pass
-- '-Infinity' for contacts that are never throttled), keeps the IP of the latest
-- contact, and credits the farmer with the online window that followed the
-- previous contact -- the time since it, at most p_window -- split across the UTC
-- days it covers. Returns one row per known farmer: whether its contact was
-- written. PL/pgSQL, not LANGUAGE sql: it keeps its plan (0.5 instead of 0.9 ms of
-- PostgreSQL time for a batch of 8 pings). "use_column": the table's btc_addr, not
-- the OUT parameter.
CREATE FUNCTION record_contacts(p_addrs text[], p_ats double precision[], p_ips text[],
                                p_min_gap double precision, p_window double precision)
RETURNS TABLE (btc_addr text, written boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        WITH input AS (
            SELECT DISTINCT ON (u.addr) u.addr, u.at, u.ip
            FROM unnest(p_addrs, p_ats, p_ips) AS u(addr, at, ip)
            ORDER BY u.addr, u.at DESC
        ), target AS (
            -- Rows are locked in id order, so concurrent batches (from several
            -- daemons) queue behind each other instead of deadlocking.
            SELECT f.id, f.btc_addr, f.last_seen AS previous, i.at, i.ip
            FROM farmers f JOIN input i ON f.btc_addr = i.addr
            ORDER BY f.id
            FOR UPDATE OF f
        ), moved AS (
            UPDATE farmers f SET last_seen = greatest(t.previous, t.at),
                                 last_ip = coalesce(t.ip, f.last_ip)
            FROM target t
            WHERE f.id = t.id AND t.at >= t.previous + p_min_gap
            RETURNING f.id, t.previous AS since,
                      greatest(0, least(t.at - t.previous, p_window)) AS covered
        ), pieces AS (
            SELECT m.id, g.day::date AS day,
                   least(m.since + m.covered, extract(epoch FROM g.day + interval '1 day'))
                   - greatest(m.since, extract(epoch FROM g.day)) AS seconds
            FROM moved m,
                 LATERAL generate_series(
                     date_trunc('day', to_timestamp(m.since) AT TIME ZONE 'UTC'),
                     date_trunc('day', to_timestamp(m.since + m.covered) AT TIME ZONE 'UTC'),
                     interval '1 day') AS g(day)
            WHERE m.covered > 0
        ), credited AS (
            INSERT INTO uptime_days AS u (farmer_id, day, online_seconds)
            SELECT id, day, seconds FROM pieces WHERE seconds > 0
            ON CONFLICT (farmer_id, day)
            DO UPDATE SET online_seconds = u.online_seconds + excluded.online_seconds
        )
        SELECT t.btc_addr, m.id IS NOT NULL FROM target t LEFT JOIN moved m ON m.id = t.id;
END
$$;

-- A height or bandwidth report: set the figures and record a (never throttled)
-- contact in one round trip. Returns whether the farmer exists.
CREATE FUNCTION set_height(p_addr text, p_height bigint, p_at double precision,
                           p_ip text, p_window double precision)
RETURNS boolean
LANGUAGE sql AS $$
    UPDATE farmers SET height = p_height WHERE btc_addr = p_addr;
    SELECT count(*) > 0 FROM record_contacts(ARRAY[p_addr], ARRAY[p_at], ARRAY[p_ip],
                                             '-Infinity', p_window);
$$;

CREATE FUNCTION set_bandwidth(p_addr text, p_upload double precision,
                              p_download double precision, p_at double precision,
                              p_ip text, p_window double precision)
RETURNS boolean
LANGUAGE sql AS $$
    UPDATE farmers SET bandwidth_upload = p_upload, bandwidth_download = p_download
    WHERE btc_addr = p_addr;
    SELECT count(*) > 0 FROM record_contacts(ARRAY[p_addr], ARRAY[p_at], ARRAY[p_ip],
                                             '-Infinity', p_window);
$$;
