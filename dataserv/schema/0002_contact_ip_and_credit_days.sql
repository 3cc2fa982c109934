-- record_contacts, as in 0001, with two corrections:
--  * several contacts of one farmer in one batch keep the IP of the latest contact
--    (0001 kept the alphabetically largest IP, which is not even an IP that was seen
--    last);
--  * the credited time is the online window that follows the previous contact,
--    [previous, previous + covered], so it lands on the UTC days the farmer was
--    online (0001 put it just before the new contact, on the wrong day after a gap
--    longer than the window).
CREATE OR REPLACE FUNCTION record_contacts(p_addrs text[], p_ats double precision[],
                                           p_ips text[], p_min_gap double precision,
                                           p_window double precision)
RETURNS TABLE (btc_addr text, written boolean)
LANGUAGE sql AS $$
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
    SELECT t.btc_addr, m.id IS NOT NULL FROM target t LEFT JOIN moved m ON m.id = t.id
$$;
