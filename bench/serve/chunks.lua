-- wrk script for bench/serve/run: every wrk thread walks the chunk list from its own
-- starting offset, so connections do not all ask for the same chunk at the same moment
-- (a server with a tiny hot cache would otherwise look better than it is).
-- The list (one /chunks/<sha256> path a line) is read from the file named by $CHUNK_PATHS.
local paths = {}
for line in io.lines(os.getenv("CHUNK_PATHS")) do paths[#paths + 1] = line end

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local i
function init(args)
  -- spread the threads' starting points over the list
  i = (id * 7919) % #paths
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

-- one line wrk prints at the end that the bash script parses: bytes, seconds, requests, errors
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %.6f %d %d\n", summary.bytes, summary.duration / 1e6,
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
