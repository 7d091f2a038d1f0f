-- wrk script for benches/load.sh's "mix" workload: 9 requests in 10 are
-- `GET /` with the browser headers given to wrk with -H, 1 in 10 is a JSON
-- login POST on palisade's default login route (`POST /login`,
-- `{"username": …, "password": …}`, as a browser's fetch() sends it).
--
-- Each login comes from its own client address and user: an
-- `X-Forwarded-For` address from 198.18.0.0/15 (the range set aside for
-- benchmarks, RFC 2544) that load.sh's palisade configuration trusts from
-- 127.0.0.1, and a username and password of its own. Logins from one
-- address would be what palisade is there to stop (the login route allows
-- 30 a minute per client, and many users from one address is credential
-- stuffing): the mix would measure cheap 429s instead of forwarding.
-- 131,072 addresses at a few thousand logins a second make each address
-- log in a few times a minute, well inside the limit. nginx gets the same
-- requests (and passes the header on). The GETs carry no X-Forwarded-For.

local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
end

local get_request
local login_headers
local sequence

function init(args)
   get_request = wrk.format("GET", "/")
   login_headers = {}
   for name, value in pairs(wrk.headers) do
      login_headers[name] = value
   end
   -- What Chromium's fetch() adds to a same-origin JSON POST.
   login_headers["Content-Type"] = "application/json"
   login_headers["Accept"] = "application/json"
   login_headers["Origin"] = "http://127.0.0.1"
   login_headers["Sec-Fetch-Site"] = "same-origin"
   login_headers["Sec-Fetch-Mode"] = "cors"
   login_headers["Sec-Fetch-Dest"] = "empty"
   login_headers["Sec-Fetch-User"] = nil
   login_headers["Upgrade-Insecure-Requests"] = nil
   -- Threads walk the address range from different places.
   sequence = (thread_index or 0) * 65536
end

function request()
   sequence = sequence + 1
   if sequence % 10 ~= 0 then
      return get_request
   end
   local n = (sequence / 10) % 131072
   login_headers["X-Forwarded-For"] =
      string.format("198.%d.%d.%d", 18 + math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
   local body = string.format('{"username":"user%d@example.com","password":"Bench-%d-kettle-violet"}', n, n)
   return wrk.format("POST", "/login", login_headers, body)
end
