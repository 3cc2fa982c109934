-- Replays pre-signed raw HTTP requests, one file per wrk thread, and prints
-- the results as one JSON line. Usage: wrk -s replay.lua URL -- PREFIX
-- reads PREFIX.<thread number> (requests separated by a NUL byte).
local counter = 0
local threads = {}

function setup(thread)
    thread:set("id", counter)
    table.insert(threads, thread)
    counter = counter + 1
end

function init(args)
    local f = assert(io.open(args[1] .. "." .. id, "rb"))
    local data = f:read("*a")
    f:close()
    requests = {}
    for chunk in string.gmatch(data, "([^%z]+)") do
        table.insert(requests, chunk)
    end
    position = 0
    exhausted = 0
end

function request()
    position = position + 1
    if position > #requests then
        -- Wrap around; the driver signs enough that a run should not get here.
        position = 1
        exhausted = exhausted + 1
    end
    return requests[position]
end

function done(summary, latency, requests)
    local wrapped = 0
    for _, thread in ipairs(threads) do
        wrapped = wrapped + (thread:get("exhausted") or 0)
    end
    io.write(string.format(
        'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
        .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, '
        .. '"max_us": %d, "wrapped": %d}\n',
        summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
        summary.errors.write, summary.errors.status, summary.errors.timeout,
        latency:percentile(50), latency:percentile(99), latency.max, wrapped))
end
