-- record_contacts also returns the farmer's last contact as stored, so that a daemon
-- whose ping was throttled by another daemon's (or a previous run's) contact learns
-- when that contact was and throttles the farmer's next pings in memory; before,
-- every such ping went to PostgreSQL until the farmer's next written contact.
-- The return type changes, so the function is dropped and made again (callers
-- select columns by name; set_height and set_bandwidth look it up by name).
DROP FUNCTION record_contacts(text[], double precision[], text[], double precision,
                              double precision);

CREATE FUNCTION record_contacts(p_addrs text[], p_ats double precision[], p_ips text[],
                                p_min_gap double precision, p_window double precision)
RETURNS TABLE (btc_addr text, written boolean, last_contact double precision)
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
        -- The last_seen now stored (written or not): a daemon that did not write
        -- the previous contact can still throttle the next pings in memory.
        SELECT t.btc_addr, m.id IS NOT NULL,
               CASE WHEN m.id IS NULL THEN t.previous ELSE greatest(t.previous, t.at) END
        FROM target t LEFT JOIN moved m ON m.id = t.id;
END
$$;

ALTER FUNCTION record_contacts(text[], double precision[], text[], double precision,
                               double precision)
    SET plan_cache_mode = force_generic_plan;
