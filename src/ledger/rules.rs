//! The ledger's rules (see the module docs of [`crate::ledger`]) as Lua scripts, each applied
//! atomically per script call.

/// KEYS: (fields hash, fly lease, consent hash) per event. ARGV: owner, ttl ms, lease ms, consent
/// ttl ms, then per event five: kind code ([`Kind::code`]), field names and, in the same order,
/// each field's own `occurred_at` ms (both joined by "\31"), the event's `occurred_at` ms, its
/// list ids (joined by "\31"). Returns per event -1 (busy) or "<fields>|<lists>|<flag>": one
/// '0'/'1' per field and per list ('1' = go), flag 'X' (superseded), 'B' (sign-up blocked) or
/// empty. The rules are the module docs'.
pub(super) const CLAIM: &str = r#"
local out = {}
local n = #KEYS / 3
local function num(key, f) return tonumber(redis.call('HGET', key, f) or '-1') end
local function split(s)
  local t = {}
  for x in string.gmatch(s, '[^\31]+') do t[#t+1] = x end
  return t
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
    local del = num(ck, 'del')
    local fm, lm, flag = '', '', ''
    if kind == 'u' or kind == 'e' then
      if occ < del then
        flag = 'X'
      else
        for j, name in ipairs(names) do
          local t = tonumber(times[j])
          local floor = math.max(num(hk, name), del)
          if t >= floor then
            redis.call('HSET', hk, name, times[j])
            fm = fm .. '1'
          else
            fm = fm .. '0'
          end
        end
        for _, l in ipairs(lists) do
          if num(hk, '-' .. l) > occ then
            lm = lm .. '0'
          else
            if occ > num(hk, '+' .. l) then redis.call('HSET', hk, '+' .. l, occ) end
            lm = lm .. '1'
          end
        end
        if kind == 'e' then
          if num(ck, 'out') > occ then
            flag = 'B'
          elseif occ > num(hk, '!in') then
            redis.call('HSET', hk, '!in', occ)
          end
        end
        if occ > num(hk, '!up') then redis.call('HSET', hk, '!up', occ) end
      end
    elseif kind == 'U' then
      if num(hk, '!in') > occ or del > occ then
        flag = 'X'
      elseif occ > num(ck, 'out') then
        redis.call('HSET', ck, 'out', occ)
      end
    elseif kind == 'R' then
      if del > occ then
        flag = 'X'
      else
        for _, l in ipairs(lists) do
          if num(hk, '+' .. l) > occ then
            lm = lm .. '0'
          else
            if occ > num(hk, '-' .. l) then redis.call('HSET', hk, '-' .. l, occ) end
            lm = lm .. '1'
          end
        end
      end
    elseif kind == 'D' then
      if num(hk, '!up') > occ then
        flag = 'X'
      elseif occ > del then
        redis.call('HSET', ck, 'del', occ)
      end
    end
    if redis.call('EXISTS', hk) == 1 then redis.call('PEXPIRE', hk, ARGV[2]) end
    if redis.call('EXISTS', ck) == 1 then redis.call('PEXPIRE', ck, ARGV[4]) end
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
