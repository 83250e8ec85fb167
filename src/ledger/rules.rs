//! The ledger's rules (see the module docs of [`crate::ledger`]) as Lua scripts, each applied
//! atomically per script call.

/// KEYS: (fields hash, fly lease, consent hash) per event. ARGV: owner, ttl ms, lease ms, consent
/// ttl ms, then per event five: kind code ([`Kind::code`]), field names and, in the same order,
/// each field's own `occurred_at` ms (both joined by "\31"), the event's `occurred_at` ms, its
/// list ids (joined by "\31"). Returns per event -1 (busy) or "<fields>|<lists>|<flag>": one
/// '0'/'1' per field and per list ('1' = go), flag 'X' (superseded), 'B' (sign-up blocked) or
/// empty. The rules are the module docs'.
pub(super) const CLAIM: &str = r#"
-- Each hash is read once (HMGET) and written once (HSET): a claim of a 40,000-contact import
-- runs this for every contact, and one Redis command per field read or written made Redis the
-- busiest process of the overhead figure (BENCHMARKS.md, profiling notes).
local out = {}
local n = #KEYS / 3
local function split(s)
  local t = {}
  for x in string.gmatch(s, '[^\31]+') do t[#t+1] = x end
  return t
end
-- Read `names` of hash `key` at once: a table name -> number (-1 where absent).
local function read(key, names)
  local r = {}
  if #names == 0 then return r end
  local v = redis.call('HMGET', key, unpack(names))
  for j, name in ipairs(names) do r[name] = tonumber(v[j] or '-1') end
  return r
end
-- Raise `name` to `v` in `w` (the writes of one hash) and in `cur` (what later rules read).
local function raise(w, cur, name, v)
  w[#w+1] = name
  w[#w+1] = v
  cur[name] = tonumber(v)
end
for i = 1, n do
  local hk, fk, ck = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local b = 4 + 5*(i-1)
  local kind, names, times = ARGV[b+1], split(ARGV[b+2]), split(ARGV[b+3])
  local occ, lists = tonumber(ARGV[b+4]), split(ARGV[b+5])
  local fly = redis.call('GET', fk)
  if fly and fly ~= ARGV[1] then
    out[i] = -1
  else
    redis.call('SET', fk, ARGV[1], 'PX', ARGV[3])
    local c = read(ck, {'del', 'out'})
    local del = c['del']
    local want = {}
    if kind == 'u' or kind == 'e' then
      for _, name in ipairs(names) do want[#want+1] = name end
      for _, l in ipairs(lists) do want[#want+1] = '-' .. l; want[#want+1] = '+' .. l end
      want[#want+1] = '!in'
      want[#want+1] = '!up'
    elseif kind == 'U' then
      want = {'!in'}
    elseif kind == 'R' then
      for _, l in ipairs(lists) do want[#want+1] = '-' .. l; want[#want+1] = '+' .. l end
    elseif kind == 'D' then
      want = {'!up'}
    end
    local h = read(hk, want)
    local hw, cw = {}, {}
    local fm, lm, flag = '', '', ''
    if kind == 'u' or kind == 'e' then
      if occ < del then
        flag = 'X'
      else
        for j, name in ipairs(names) do
          local t = tonumber(times[j])
          local floor = math.max(h[name], del)
          if t >= floor then
            raise(hw, h, name, times[j])
            fm = fm .. '1'
          else
            fm = fm .. '0'
          end
        end
        for _, l in ipairs(lists) do
          if h['-' .. l] > occ then
            lm = lm .. '0'
          else
            if occ > h['+' .. l] then raise(hw, h, '+' .. l, ARGV[b+4]) end
            lm = lm .. '1'
          end
        end
        if kind == 'e' then
          if c['out'] > occ then
            flag = 'B'
          elseif occ > h['!in'] then
            raise(hw, h, '!in', ARGV[b+4])
          end
        end
        if occ > h['!up'] then raise(hw, h, '!up', ARGV[b+4]) end
      end
    elseif kind == 'U' then
      if h['!in'] > occ or del > occ then
        flag = 'X'
      elseif occ > c['out'] then
        raise(cw, c, 'out', ARGV[b+4])
      end
    elseif kind == 'R' then
      if del > occ then
        flag = 'X'
      else
        for _, l in ipairs(lists) do
          if h['+' .. l] > occ then
            lm = lm .. '0'
          else
            if occ > h['-' .. l] then raise(hw, h, '-' .. l, ARGV[b+4]) end
            lm = lm .. '1'
          end
        end
      end
    elseif kind == 'D' then
      if h['!up'] > occ then
        flag = 'X'
      elseif occ > del then
        raise(cw, c, 'del', ARGV[b+4])
      end
    end
    if #hw > 0 then redis.call('HSET', hk, unpack(hw)) end
    if #cw > 0 then redis.call('HSET', ck, unpack(cw)) end
    -- PEXPIRE leaves a missing key missing (as EXISTS then PEXPIRE did).
    redis.call('PEXPIRE', hk, ARGV[2])
    redis.call('PEXPIRE', ck, ARGV[4])
    out[i] = fm .. '|' .. lm .. '|' .. flag
  end
end
return out
"#;

/// KEYS: the consent hash. ARGV: fact name, time ms, ttl ms. Raises the fact to the time.
pub(super) const RAISE: &str = r#"
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

pub(super) const RELEASE: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"#;

pub(super) const RENEW: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
return 1
"#;
