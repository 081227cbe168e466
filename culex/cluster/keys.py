"""Where a cluster keeps its state in Redis, and the scripts that change it atomically.

Membership lives under one hash tag, `{culex-meta}`, so that its scripts touch one slot of a
Redis Cluster; each member's inbound stream has its own tag (the member's name), so the
streams, which carry the traffic, spread over the shards.

- `culex:{culex-meta}:index` (hash): member name -> its number, allocated once and kept (it
  numbers the links and stamps retained messages, so it must be unique and stable);
- `culex:{culex-meta}:epoch:<name>` (counter): bumped by every start of that member, a fencing
  token: records of an older incarnation are recognised and dropped;
- `culex:{culex-meta}:member:<name>` (string with a TTL, the lease): `<instance>:<epoch>:
  <index>`, refreshed by heartbeats only while it is still this process's;
- `culex:{culex-meta}:members` (set): every name that joined and was not removed (the live
  ones have a lease; the others are down, and are still routed to);
- `culex:{culex-meta}:filters:<name>` (set): that member's topic filters, for the nodes that
  start while it is down;
- `culex:{culex-meta}:owners` (hash): client id -> `<member name> <token>`, the member that
  owns its session, by its latest claim; `culex:{culex-meta}:claims` (counter) numbers the
  claims (see core/session_moves.py);
- `culex:{<name>}:in` (stream, consumer group `culex`): the records sent to that member;
- `culex:{<name>}:...`: that member's durable state, with `[storage] backend = "redis"`
  (storage/redis_store.py), in its stream's slot, so one script commits it atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

META = "culex:{culex-meta}"
INDEX = f"{META}:index"
NEXT_INDEX = f"{META}:next-index"
MEMBERS = f"{META}:members"
GROUP = "culex"
OWNERS = f"{META}:owners"
CLAIMS = f"{META}:claims"


def member_key(name: str) -> str:
    return f"{META}:member:{name}"


def epoch_key(name: str) -> str:
    return f"{META}:epoch:{name}"


def filters_key(name: str) -> str:
    return f"{META}:filters:{name}"


def stream_key(name: str) -> str:
    return f"culex:{{{name}}}:in"


# KEYS: INDEX, NEXT_INDEX, epoch key, member key, MEMBERS; ARGV: name, instance, lease (ms),
# the largest member number + 1. Returns {member number, epoch}, or {-1, 0} when every number
# is taken.
JOIN = """
local index = redis.call('HGET', KEYS[1], ARGV[1])
if not index then
  index = redis.call('INCR', KEYS[2]) - 1
  if index >= tonumber(ARGV[4]) then return {-1, 0} end
  redis.call('HSET', KEYS[1], ARGV[1], index)
end
local epoch = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[4], ARGV[2] .. ':' .. epoch .. ':' .. index, 'PX', ARGV[3])
redis.call('SADD', KEYS[5], ARGV[1])
return {tonumber(index), epoch}
"""

# KEYS: member key; ARGV: this process's value, lease (ms). 1 when the lease was renewed, 0
# when the key is gone (expired) or another process holds the name now.
HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: filters key; ARGV: every filter. The member's whole set at once.
REPLACE_FILTERS = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV
"""

# KEYS: member key; ARGV: this process's value. Leave: the lease goes only if it is ours.
LEAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: member key, MEMBERS, filters key; ARGV: name. Removes a member that is down (the
# others stop routing to it); -1 when its lease is alive, 0 when it is not a member.
FORGET = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local removed = redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return removed
"""

# KEYS: OWNERS, CLAIMS; ARGV: client id, this member's name. Returns {the previous owner's
# record or "", the new claim's token}.
CLAIM = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. token)
return {previous or '', token}
"""

# KEYS: OWNERS, CLAIMS; ARGV: client id, a forgotten member's name, this member's name. A claim
# for this member only while the latest claim is still the forgotten member's (or none is
# recorded): the new claim's token, or 0 when another member has claimed the id since.
ADOPT = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
if previous and string.match(previous, '^(.*) %d+$') ~= ARGV[2] then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ' ' .. token)
return token
"""

# KEYS: OWNERS; ARGV: client id, the record this member's claim wrote. Gone only if unchanged.
RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def owner_record(member: str, token: int) -> str:
    return f"{member} {token}"


def record_owner(record: bytes) -> str:
    """The member name in an owner record."""
    return record.decode().rpartition(" ")[0]


@dataclass(frozen=True, slots=True)
class Lease:
    """A live member as its lease says: `<instance>:<epoch>:<index>`."""

    instance: str
    epoch: int
    index: int

    @classmethod
    def parse(cls, value: bytes) -> Lease:
        instance, epoch, index = value.decode().split(":")
        return cls(instance, int(epoch), int(index))

    def value(self) -> str:
        return f"{self.instance}:{self.epoch}:{self.index}"
