//! The Lua scripts: every change to Redis is one of them, so each is atomic.

/// A Lua function for the scripts that register a user: when nobody of
/// that name was registered anywhere, but their claim says a call rings
/// them, they were asleep and pushed; the caller's node hears where they
/// woke (`Woken`). Arguments: the user's call key, the channel prefix,
/// the user-key prefix, the name.
macro_rules! woken {
    () => {
        r"
local function woken(call_key, channels, users, name)
  local claim = redis.call('GET', call_key)
  local caller = claim and string.match(claim, '^(.-)>')
  local at = caller and redis.call('GET', users .. caller)
  if at then
    local message = cjson.encode({Woken = {from = name, to = caller}})
    redis.call('PUBLISH', channels .. string.match(at, '^%S+'), message)
  end
end
"
    };
}

/// Sets where a user is (`<node> <socket>`) and, when they were on
/// another node, tells that node to let go of that socket (else see
/// `woken`). KEYS: user key, their call key. ARGV: node, socket, ttl ms,
/// channel prefix, the kick message before and after the old socket id
/// (a JSON string), the user-key prefix, the name.
pub(super) const JOIN: &str = concat!(
    woken!(),
    r"
local old = redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3], 'GET')
if old then
  local node, conn = string.match(old, '^(%S+) (%S+)$')
  if node and node ~= ARGV[1] then
    redis.call('PUBLISH', ARGV[4] .. node, ARGV[5] .. cjson.encode(conn) .. ARGV[6])
  end
else
  woken(KEYS[2], ARGV[4], ARGV[7], ARGV[8])
end
return 0"
);

/// Deletes a user's key if it still says they are on node ARGV[1].
pub(super) const LEAVE: &str = r"
local now = redis.call('GET', KEYS[1])
if now and string.match(now, '^%S+') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Deletes each key that still holds ARGV[1] (a call's claim).
pub(super) const RELEASE: &str = r"
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    deleted = deleted + redis.call('DEL', key)
  end
end
return deleted";

/// Publishes a message on the channel of the node `KEYS[1]` names.
/// ARGV: channel prefix, message. -1: no such user; else the receivers.
pub(super) const ROUTE: &str = r"
local now = redis.call('GET', KEYS[1])
if not now then return -1 end
return redis.call('PUBLISH', ARGV[1] .. string.match(now, '^%S+'), ARGV[2])";

/// Claims caller and callee for a call. KEYS: callee's user key, caller's
/// call key, callee's call key, callee's push key. ARGV: claim, ttl ms.
/// 0 granted, 1 callee offline, 2 caller busy, 3 callee busy, 4 granted
/// for a callee registered nowhere who has push subscriptions (asleep).
pub(super) const CLAIM: &str = r"
local asleep = redis.call('EXISTS', KEYS[1]) == 0
if asleep and redis.call('EXISTS', KEYS[4]) == 0 then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 3 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
if asleep then return 4 end
return 0";

/// Claims those of a group's members (or the one user) who can ring for a
/// call, and the caller with them if any can. KEYS: the caller's call key,
/// then each member's user key, call key and push key. ARGV: claim, ttl
/// ms, 1 to stop at the first member claimed (else 0), what the caller's
/// key must hold if set ('' for a new call, whose caller must be free).
/// Returns {2} when the caller is in another call, else 0 and each
/// member's answer in order: 0 claimed, 1 offline, 3 busy, 4 claimed
/// while asleep (registered nowhere, with push subscriptions).
pub(super) const CLAIM_MEMBERS: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[4] then return {2} end
local answers, claimed = {0}, false
for i = 2, #KEYS, 3 do
  local asleep = redis.call('EXISTS', KEYS[i]) == 0
  if asleep and redis.call('EXISTS', KEYS[i + 2]) == 0 then
    answers[#answers + 1] = 1
  elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
    answers[#answers + 1] = 3
  else
    redis.call('SET', KEYS[i + 1], ARGV[1], 'PX', ARGV[2])
    answers[#answers + 1] = asleep and 4 or 0
    claimed = true
    if ARGV[3] == '1' then break end
  end
end
if claimed then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return answers";

/// Refreshes keys this node owns; sets them again where they vanished
/// if ARGV[2] is 1 (presence always; claims only just after Redis came
/// back, as a refresh that crossed a release must not bring a claim back);
/// leaves alone a key someone else took meanwhile, and returns the
/// positions (from 1) of those. With ARGV[3] 1 (presence), a key is ours
/// when it names this node, whichever of a user's devices it names (a
/// user with several holds the one that registered last). KEYS: the keys.
/// ARGV: ttl ms, 1 or 0, 1 or 0, then each key's value.
pub(super) const HOLD: &str = r"
local taken = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 3]
  local now = redis.call('GET', key)
  local ours = now == value
  if now and not ours and ARGV[3] == '1' then
    ours = string.match(now, '^%S+') == string.match(value, '^%S+')
  end
  if ours or (not now and ARGV[2] == '1') then
    redis.call('SET', key, value, 'PX', ARGV[1])
  elseif now then
    taken[#taken + 1] = i
  end
end
return taken";

/// Every user and the number of distinct calls claimed. ARGV: key prefix.
pub(super) const OVERVIEW: &str = r"
local users, calls, seen = {}, 0, {}
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. 'user:*', 'COUNT', 1000)
  cursor = r[1]
  for _, key in ipairs(r[2]) do users[#users + 1] = key end
until cursor == '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. 'call:*', 'COUNT', 1000)
  cursor = r[1]
  for _, key in ipairs(r[2]) do
    local claim = redis.call('GET', key)
    if claim and not seen[claim] then
      seen[claim] = true
      calls = calls + 1
    end
  end
until cursor == '0'
return {users, calls}";

/// Finds the home of a user who may have several devices: the node their
/// key names, if that node is alive; else this node, which takes the key
/// (and, when nobody had it, see `woken`). KEYS: user key, their call
/// key. ARGV: node, socket, ttl ms, the alive-key prefix, the channel
/// prefix, the user-key prefix, the name. Returns the home's id.
pub(super) const HOME: &str = concat!(
    woken!(),
    r"
local now = redis.call('GET', KEYS[1])
if now then
  local node = string.match(now, '^%S+')
  if node and node ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. node) == 1 then
    return node
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
if not now then woken(KEYS[2], ARGV[5], ARGV[6], ARGV[7]) end
return ARGV[1]"
);

/// Checks homes and nodes of relayed devices. KEYS: the user keys of
/// users relayed from this node, then the alive keys of the nodes whose
/// devices are relayed here. ARGV: how many user keys, then the home each
/// must name. Returns the positions (from 1) of those that do not hold.
pub(super) const WATCH: &str = r"
local gone, users = {}, tonumber(ARGV[1])
for i = 1, users do
  local now = redis.call('GET', KEYS[i])
  if not now or string.match(now, '^%S+') ~= ARGV[i + 1] then gone[#gone + 1] = i end
end
for i = users + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then gone[#gone + 1] = i end
end
return gone";

/// A Lua function for the lists the cluster keeps per user, bounded per
/// user and for all: appends `value` to `list`; past `per_user` the
/// oldest goes, else past `total` (the `field` of the `counts` hash) it
/// is not kept (1). Returns 0 when kept.
macro_rules! append {
    () => {
        r"
local function append(list, counts, field, value, per_user, total)
  if redis.call('LLEN', list) >= tonumber(per_user) then
    redis.call('LPOP', list)
  elseif tonumber(redis.call('HGET', counts, field) or '0') >= tonumber(total) then
    return 1
  else
    redis.call('HINCRBY', counts, field, 1)
  end
  redis.call('RPUSH', list, value)
  return 0
end
"
    };
}

/// Keeps a push subscription: the same endpoint again replaces it (as the
/// newest); past the bound per user the oldest goes; past the bound for
/// the cluster a new user's is refused (1). KEYS: the user's push key,
/// the counts key. ARGV: endpoint, the subscription's JSON, the bound
/// per user, the bound for all. Returns 0 when kept.
pub(super) const SUBSCRIBE: &str = concat!(
    append!(),
    r"
local list = redis.call('LRANGE', KEYS[1], 0, -1)
for _, entry in ipairs(list) do
  local ok, kept = pcall(cjson.decode, entry)
  if ok and type(kept) == 'table' and kept.endpoint == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, entry)
    redis.call('RPUSH', KEYS[1], ARGV[2])
    return 0
  end
end
return append(KEYS[1], KEYS[2], 'push', ARGV[2], ARGV[3], ARGV[4])"
);

/// Forgets the push subscription of an endpoint. KEYS: the user's push
/// key, the counts key. ARGV: endpoint. Returns how many went.
pub(super) const UNSUBSCRIBE: &str = r"
local removed = 0
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, kept = pcall(cjson.decode, entry)
  if ok and type(kept) == 'table' and kept.endpoint == ARGV[1] then
    removed = removed + redis.call('LREM', KEYS[1], 0, entry)
  end
end
if removed > 0 then redis.call('HINCRBY', KEYS[2], 'push', -removed) end
return removed";

/// Keeps a missed call: past the bound per user the oldest goes; past the
/// bound for the cluster it is not kept (1). KEYS: the user's missed
/// key, the counts key. ARGV: the call's JSON, the bound per user, the
/// bound for all. Returns 0 when kept.
pub(super) const MISS: &str = concat!(
    append!(),
    r"
return append(KEYS[1], KEYS[2], 'missed', ARGV[1], ARGV[2], ARGV[3])"
);

/// Forgets a user's missed calls. KEYS: their missed key, the counts key.
pub(super) const SEEN: &str = r"
local n = redis.call('LLEN', KEYS[1])
if n > 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'missed', -n)
end
return n";

/// The cluster's value of a key: the one set first, else ARGV[1], set now.
pub(super) const AGREE: &str = r"
local now = redis.call('GET', KEYS[1])
if now then return now end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]";
