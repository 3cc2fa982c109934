-- Plans that are made once per connection instead of once per call.
--
-- record_contacts: PL/pgSQL caches the plan of its statement, but with array
-- parameters the plan cache kept choosing a fresh custom plan on every call,
-- which cost ~530 us of PostgreSQL CPU per batch of pings whatever its size; the
-- generic plan (the same plan, made once) costs ~200 us.
ALTER FUNCTION record_contacts(text[], double precision[], text[], double precision,
                               double precision)
    SET plan_cache_mode = force_generic_plan;

-- set_height and set_bandwidth were LANGUAGE sql, which is planned on every call
-- (300 us of PostgreSQL CPU per height report; 225 us as PL/pgSQL).
CREATE OR REPLACE FUNCTION set_height(p_addr text, p_height bigint, p_at double precision,
                                      p_ip text, p_window double precision)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE farmers SET height = p_height WHERE btc_addr = p_addr;
    RETURN (SELECT count(*) > 0 FROM record_contacts(ARRAY[p_addr], ARRAY[p_at], ARRAY[p_ip],
                                                      '-Infinity', p_window));
END
$$;

CREATE OR REPLACE FUNCTION set_bandwidth(p_addr text, p_upload double precision,
                                         p_download double precision, p_at double precision,
                                         p_ip text, p_window double precision)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE farmers SET bandwidth_upload = p_upload, bandwidth_download = p_download
    WHERE btc_addr = p_addr;
    RETURN (SELECT count(*) > 0 FROM record_contacts(ARRAY[p_addr], ARRAY[p_at], ARRAY[p_ip],
                                                      '-Infinity', p_window));
END
$$;
