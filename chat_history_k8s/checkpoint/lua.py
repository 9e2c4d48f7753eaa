"""The Lua scripts: each operation on a thread is one EVALSHA, atomic, over the thread's keys.

Every script declares all of the thread's keys (layout.KEY_NAMES order), which share one hash
tag, so it runs unchanged on Redis Cluster. Write scripts start with `#!lua`: Redis then
refuses them up front when it is out of memory, instead of failing after some of their
writes, and they check the lease before their first write, so a refused script has written
nothing. Read scripts are `flags=no-writes`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

_PRELUDE = r"""
local CP, INFO, IDX, BLOBS, WRITES, WIDX, FENCE, LEASE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local SEP, AFTER = '\0', '\1'

-- unpack() is limited by the Lua stack: long lists go in chunks (of an even size, for pairs)
local function chunked(cmd, key, list)
  for i = 1, #list, 500 do redis.call(cmd, key, unpack(list, i, math.min(i + 499, #list))) end
end

local function ns_of(member) return member:sub(1, member:find(SEP, 1, true) - 1) end
local function ns_range(ns) return '[' .. ns .. SEP, '(' .. ns .. AFTER end

-- The writer must hold the thread's current lease (token = '<fence>:<nonce>'); a writer
-- without a token may write only while nobody holds one. Raised before any write.
local function guard(token)
  local holder = redis.call('GET', LEASE)
  if token == '' then
    if holder then error({err = 'LEASED another turn holds this thread'}) end
  elseif holder ~= token then
    error({err = 'FENCED this turn no longer holds the thread: its lease expired or was taken'})
  end
end

-- The sliding TTL: every key of the thread but the lease gets the same one on every write.
local function touch(ttl)
  for i = 1, 7 do
    if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
  end
end

local function refs(member)
  local raw = redis.call('HGET', INFO, member)
  if not raw then return {}, '' end
  local info = cjson.decode(raw)
  return info.b, info.r
end

local function clear_writes(lo, hi)
  local fields = redis.call('ZRANGE', WIDX, lo, hi, 'BYLEX')
  if #fields > 0 then
    chunked('HDEL', WRITES, fields)
    redis.call('ZREMRANGEBYLEX', WIDX, lo, hi)
  end
end

-- Drop checkpoints of namespace ns, their writes, and the blobs no checkpoint in kept uses.
local function drop(ns, dropped, kept)
  local live, gone = {}, {}
  for _, m in ipairs(kept) do
    for _, b in ipairs((refs(m))) do live[b] = true end
  end
  for _, m in ipairs(dropped) do
    for _, b in ipairs((refs(m))) do
      if not live[b] then live[b] = true; gone[#gone + 1] = ns .. SEP .. b end
    end
    clear_writes('[' .. m .. SEP, '(' .. m .. AFTER)
  end
  if #dropped > 0 then
    chunked('HDEL', CP, dropped); chunked('HDEL', INFO, dropped); chunked('ZREM', IDX, dropped)
  end
  if #gone > 0 then chunked('HDEL', BLOBS, gone) end
end

-- Keep the newest `keep` checkpoints of ns (checkpoint ids sort by time); 0 keeps all.
local function retain(ns, keep)
  if keep <= 0 then return end
  local lo, hi = ns_range(ns)
  local members = redis.call('ZRANGE', IDX, lo, hi, 'BYLEX')
  local excess = #members - keep
  if excess <= 0 then return end
  local dropped, kept = {}, {}
  for i, m in ipairs(members) do
    if i <= excess then dropped[#dropped + 1] = m else kept[#kept + 1] = m end
  end
  drop(ns, dropped, kept)
  -- and writes filed under checkpoints older than every kept one that were never stored
  clear_writes(lo, '(' .. kept[1])
end

local function retain_all(keep)
  local seen = {}
  for _, m in ipairs(redis.call('ZRANGE', IDX, 0, -1)) do
    local ns = ns_of(m)
    if not seen[ns] then seen[ns] = true; retain(ns, keep) end
  end
end

local function fetch(ns, m)
  local record = redis.call('HGET', CP, m)
  if not record then return false end
  local b = refs(m)
  local names, values = {}, {}
  for i, ref in ipairs(b) do names[i] = ns .. SEP .. ref end
  if #names > 0 then values = redis.call('HMGET', BLOBS, unpack(names)) end
  local wf = redis.call('ZRANGE', WIDX, '[' .. m .. SEP, '(' .. m .. AFTER, 'BYLEX')
  local wv = {}
  if #wf > 0 then wv = redis.call('HMGET', WRITES, unpack(wf)) end
  return {m, record, b, values, wf, wv}
end
"""


@dataclass(frozen=True)
class Script:
    """A script's source and the SHA1 that EVALSHA names it by. `keeps_data`: it stores a
    conversation's data, so with `wait_replicas` its reply waits for the replicas (WAIT)."""

    name: str
    body: str
    writes: bool = True
    keeps_data: bool = False
    source: str = field(init=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        shebang = "#!lua" if self.writes else "#!lua flags=no-writes"
        source = f"{shebang}\n{_PRELUDE}\n{self.body}"
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sha", hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 - EVALSHA's name


# ARGV: nonce, lease_ms, ttl. Returns the token '<fence>:<nonce>', or nil when the thread is held.
ACQUIRE = Script(
    "acquire",
    r"""
if redis.call('EXISTS', LEASE) == 1 then return false end
local token = redis.call('INCR', FENCE) .. ':' .. ARGV[1]
local lease_ms, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SET', LEASE, token, 'PX', lease_ms)
if redis.call('EXISTS', IDX) == 1 then touch(ttl)
else redis.call('PEXPIRE', FENCE, math.max(ttl * 1000, lease_ms)) end  -- no thread yet
return token
""",
)

# ARGV: nonce. Deletes the lease only if it is still this acquisition's: the nonce is random
# per acquisition, so it names the lease even when the acquirer never saw its token.
RELEASE = Script(
    "release",
    r"""
local holder = redis.call('GET', LEASE)
if holder and holder:sub(-#ARGV[1] - 1) == ':' .. ARGV[1] then return redis.call('DEL', LEASE) end
return 0
""",
)

# ARGV: token, ttl, keep, ns, checkpoint id, record, info, then (blob ref, blob) pairs.
PUT = Script(
    "put",
    r"""
guard(ARGV[1])
local ns, m = ARGV[4], ARGV[4] .. SEP .. ARGV[5]
redis.call('HSET', CP, m, ARGV[6])
redis.call('HSET', INFO, m, ARGV[7])
redis.call('ZADD', IDX, 0, m)
local blobs = {}
for i = 8, #ARGV, 2 do
  blobs[#blobs + 1] = ns .. SEP .. ARGV[i]; blobs[#blobs + 1] = ARGV[i + 1]
end
if #blobs > 0 then chunked('HSET', BLOBS, blobs) end
retain(ns, tonumber(ARGV[3]))
touch(tonumber(ARGV[2]))
return 1
""",
    keeps_data=True,
)

# ARGV: token, ttl, keep, ns, checkpoint id, then (task_id\0idx, write, replace) triples.
# A regular write (idx >= 0) is kept if already there, a special one (ERROR, INTERRUPT, ...)
# replaced. Writes filed under a checkpoint that retention already dropped are not stored.
PUT_WRITES = Script(
    "put_writes",
    r"""
guard(ARGV[1])
local ns, m, keep = ARGV[4], ARGV[4] .. SEP .. ARGV[5], tonumber(ARGV[3])
local _, hi = ns_range(ns)
if keep > 0 and redis.call('ZLEXCOUNT', IDX, '(' .. m, hi) >= keep then return 0 end
for i = 6, #ARGV, 3 do
  local f = m .. SEP .. ARGV[i]
  if ARGV[i + 2] == '1' then redis.call('HSET', WRITES, f, ARGV[i + 1])
  else redis.call('HSETNX', WRITES, f, ARGV[i + 1]) end
  redis.call('ZADD', WIDX, 0, f)
end
touch(tonumber(ARGV[2]))
return 1
""",
    keeps_data=True,
)

# ARGV: ns, checkpoint id or '' for the newest. Returns fetch()'s reply or nil.
GET = Script(
    "get",
    r"""
local ns, m = ARGV[1], ARGV[1] .. SEP .. ARGV[2]
if ARGV[2] == '' then
  local lo, hi = ns_range(ns)
  m = redis.call('ZRANGE', IDX, hi, lo, 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
  if not m then return false end
end
return fetch(ns, m)
""",
    writes=False,
)

# ARGV: ns, '1' for every namespace. Returns [member, record, ...] oldest first.
LIST = Script(
    "list",
    r"""
local members
if ARGV[2] == '1' then members = redis.call('ZRANGE', IDX, 0, -1)
else
  local lo, hi = ns_range(ARGV[1])
  members = redis.call('ZRANGE', IDX, lo, hi, 'BYLEX')
end
local out = {}
for _, m in ipairs(members) do out[#out + 1] = m; out[#out + 1] = redis.call('HGET', CP, m) end
return out
""",
    writes=False,
)

# ARGV: (ns, member) pairs. Returns fetch()'s reply for each.
FETCH = Script(
    "fetch",
    r"""
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = fetch(ARGV[i], ARGV[i + 1]) end
return out
""",
    writes=False,
)

# ARGV: keep. Applies retention to every namespace (prune: keep = 1).
PRUNE = Script("prune", "retain_all(tonumber(ARGV[1]))\nreturn 1")

# ARGV: run ids. Drops their checkpoints (all namespaces) and what only those used.
DELETE_RUNS = Script(
    "delete_runs",
    r"""
local runs, groups, order = {}, {}, {}
for _, r in ipairs(ARGV) do runs[r] = true end
for _, m in ipairs(redis.call('ZRANGE', IDX, 0, -1)) do
  local ns = ns_of(m)
  local g = groups[ns]
  if not g then g = {dropped = {}, kept = {}}; groups[ns] = g; order[#order + 1] = ns end
  local _, run = refs(m)
  if runs[run] then g.dropped[#g.dropped + 1] = m else g.kept[#g.kept + 1] = m end
end
local n = 0
for _, ns in ipairs(order) do
  local g = groups[ns]
  if #g.dropped > 0 then drop(ns, g.dropped, g.kept); n = n + #g.dropped end
end
return n
""",
)

# Returns the thread's four hashes, flattened (HGETALL), for copy_thread.
DUMP = Script(
    "dump",
    r"""
return {redis.call('HGETALL', CP), redis.call('HGETALL', INFO),
        redis.call('HGETALL', BLOBS), redis.call('HGETALL', WRITES)}
""",
    writes=False,
)

# ARGV: ttl, keep, then the pair counts of cp, info, blobs, writes, then those pairs.
LOAD = Script(
    "load",
    r"""
local at = 7
local function load(key, n, index)
  for _ = 1, n do
    redis.call('HSET', key, ARGV[at], ARGV[at + 1])
    if index then redis.call('ZADD', index, 0, ARGV[at]) end
    at = at + 2
  end
end
load(CP, tonumber(ARGV[3]), IDX); load(INFO, tonumber(ARGV[4]))
load(BLOBS, tonumber(ARGV[5])); load(WRITES, tonumber(ARGV[6]), WIDX)
retain_all(tonumber(ARGV[2]))
touch(tonumber(ARGV[1]))
return 1
""",
    keeps_data=True,
)
