-- Registration claims its request (0005) and counts its network (0004) in one round
-- trip: the claim first, so a replayed or downgraded registration neither registers
-- nor spends its network's budget; then register_farmer as before. A farmer
-- registered with v2 headers is marked as a v2 farmer from its first row on (for an
-- address that exists already, claim_request has marked it).
-- Rows: none when the address is taken (409); else one, whose outcome is the
-- claim's ('ok', 'replayed', 'downgrade'), retry_at set when the network is full,
-- and the farmer's columns when it was registered.
CREATE FUNCTION register_claimed(p_addr text, p_payout text, p_at double precision,
                                 p_ip text, p_network text, p_limit integer,
                                 p_period double precision, p_key bytea, p_v2 boolean,
                                 p_expires double precision)
RETURNS TABLE (outcome text, retry_at double precision, id bigint, btc_addr text,
               payout_addr text, height bigint, reg_time double precision,
               last_seen double precision, bandwidth_upload double precision,
               bandwidth_download double precision, claimed_height bigint,
               height_at double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_outcome text;
BEGIN
    v_outcome := claim_request(p_addr, p_key, p_v2, p_at, p_expires);
    IF v_outcome <> 'ok' THEN
        RETURN QUERY SELECT v_outcome, NULL::double precision, NULL::bigint, NULL::text,
                            NULL::text, NULL::bigint, NULL::double precision,
                            NULL::double precision, NULL::double precision,
                            NULL::double precision, NULL::bigint, NULL::double precision;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'ok'::text, r.*
                 FROM register_farmer(p_addr, p_payout, p_at, p_ip, p_network, p_limit,
                                      p_period) AS r;
    IF p_v2 AND p_key IS NOT NULL THEN
        UPDATE farmers f SET v2_since = p_at
        WHERE f.btc_addr = p_addr AND f.v2_since IS NULL;
    END IF;
END
$$;
