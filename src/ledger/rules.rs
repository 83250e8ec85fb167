//! The ledger's rules (see the module docs of [`crate::ledger`]) as Lua scripts, each applied
//! atomically per script call.

/// KEYS: the owner's liveness key for this call's emails, then (fields hash, consent hash) per
/// event. ARGV: owner, ttl ms, lease ms, consent ttl ms, the liveness-key prefix of this call's
/// emails (the owner's key is that prefix and the owner), then per event: kind code
/// ([`Kind::code`]), the event's `occurred_at` ms, the number of fields F, F field names, each
/// field's own `occurred_at` ms in the same order, the number of lists L, L list ids. Returns per
/// event -1 (busy) or "<fields>|<lists>|<flag>": one '0'/'1' per field and per list ('1' = go),
/// flag 'X' (superseded), 'B' (sign-up blocked) or empty. The rules are the module docs'.
pub(super) const CLAIM: &str = r#"
-- A claim of a 40,000-contact import runs this for every contact, and it made Redis the busiest
-- process of the overhead figure (BENCHMARKS.md, profiling notes). So each hash is read once
-- (HMGET) and written once (HSET), the arguments come one per value (no string splitting), a
-- consent hash that does not exist is not touched, and the in-flight lease is a field of the
-- email's own hash (`!fly` = owner) made live by one key per owner (KEYS[1], with the lease's
-- TTL): taking it costs nothing beyond the hash's own write, and letting go of a whole import is
-- one DEL of that key instead of a GET and a DEL per email.
local out = {}
local n = (#KEYS - 1) / 2
local p = 6
local owner = ARGV[1]
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
-- Read `names` of hash `key` at once: a table name -> number (-1 where absent), whether any of
-- them was present, and the raw values in the order of `names`.
local function read(key, names)
  local r, any = {}, false
  if #names == 0 then return r, any, {} end
  local v = redis.call('HMGET', key, unpack(names))
  for j, name in ipairs(names) do
    if v[j] then any = true end
    r[name] = tonumber(v[j] or '-1')
  end
  return r, any, v
end
-- Raise `name` to `v` in `w` (the writes of one hash) and in `cur` (what later rules read).
local function raise(w, cur, name, v)
  w[#w+1] = name
  w[#w+1] = v
  cur[name] = tonumber(v)
end
for i = 1, n do
  local hk, ck = KEYS[2*i], KEYS[2*i+1]
  local kind, occs = ARGV[p], ARGV[p+1]
  local occ = tonumber(occs)
  local nf = tonumber(ARGV[p+2])
  local fb = p + 3
  local tb = fb + nf
  local nl = tonumber(ARGV[tb + nf])
  local lb = tb + nf + 1
  p = lb + nl
  local want = {}
  if kind == 'u' or kind == 'e' then
    for j = 0, nf - 1 do want[#want+1] = ARGV[fb + j] end
    for j = 0, nl - 1 do
      local l = ARGV[lb + j]
      want[#want+1] = '-' .. l
      want[#want+1] = '+' .. l
    end
    want[#want+1] = '!in'
    want[#want+1] = '!up'
  elseif kind == 'U' then
    want = {'!in'}
  elseif kind == 'R' then
    for j = 0, nl - 1 do
      local l = ARGV[lb + j]
      want[#want+1] = '-' .. l
      want[#want+1] = '+' .. l
    end
  elseif kind == 'D' then
    want = {'!up'}
  end
  want[#want+1] = '!fly'
  local h, _, raw = read(hk, want)
  local holder = raw[#want]
  -- The lease: free when nobody holds it, when this owner does, or when its holder's liveness
  -- key is gone (released, or expired with a dead replica). The holder's key shares this
  -- hash's slot (same prefix, see `Ledger::live_prefix`).
  if holder and holder ~= owner and redis.call('EXISTS', ARGV[5] .. holder) == 1 then
    out[i] = -1
  else
    local c, cexists = read(ck, {'del', 'out'})
    local del = c['del']
    local hw, cw = {}, {}
    local fm, lm, flag = {}, {}, ''
    if kind == 'u' or kind == 'e' then
      if occ < del then
        flag = 'X'
      else
        for j = 0, nf - 1 do
          local name, ts = ARGV[fb + j], ARGV[tb + j]
          local floor = math.max(h[name], del)
          if tonumber(ts) >= floor then
            raise(hw, h, name, ts)
            fm[#fm+1] = '1'
          else
            fm[#fm+1] = '0'
          end
        end
        for j = 0, nl - 1 do
          local l = ARGV[lb + j]
          if h['-' .. l] > occ then
            lm[#lm+1] = '0'
          else
            if occ > h['+' .. l] then raise(hw, h, '+' .. l, occs) end
            lm[#lm+1] = '1'
          end
        end
        if kind == 'e' then
          if c['out'] > occ then
            flag = 'B'
          elseif occ > h['!in'] then
            raise(hw, h, '!in', occs)
          end
        end
        if occ > h['!up'] then raise(hw, h, '!up', occs) end
      end
    elseif kind == 'U' then
      if h['!in'] > occ or del > occ then
        flag = 'X'
      elseif occ > c['out'] then
        raise(cw, c, 'out', occs)
      end
    elseif kind == 'R' then
      if del > occ then
        flag = 'X'
      else
        for j = 0, nl - 1 do
          local l = ARGV[lb + j]
          if h['+' .. l] > occ then
            lm[#lm+1] = '0'
          else
            if occ > h['-' .. l] then raise(hw, h, '-' .. l, occs) end
            lm[#lm+1] = '1'
          end
        end
      end
    elseif kind == 'D' then
      if h['!up'] > occ then
        flag = 'X'
      elseif occ > del then
        raise(cw, c, 'del', occs)
      end
    end
    -- A superseded event is settled without a call: it takes no lease (and so leaves an email
    -- the ledger does not know without a hash).
    if flag ~= 'X' then
      hw[#hw+1] = '!fly'
      hw[#hw+1] = owner
    end
    if #hw > 0 then
      redis.call('HSET', hk, unpack(hw))
      redis.call('PEXPIRE', hk, ARGV[2])
    end
    if #cw > 0 then redis.call('HSET', ck, unpack(cw)) end
    if cexists or #cw > 0 then redis.call('PEXPIRE', ck, ARGV[4]) end
    out[i] = table.concat(fm) .. '|' .. table.concat(lm) .. '|' .. flag
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

/// KEYS: fields hashes. ARGV: owner. Lets go of these emails only (the owner keeps the rest).
pub(super) const LET_GO: &str = r#"
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], '!fly') == ARGV[1] then redis.call('HDEL', KEYS[i], '!fly') end
end
return 1
"#;
