// Lua scripts the scheduler runs in Redis, where a step must read and write atomically.
//
// The release script takes the earliest due message of a group, hands it to `ready` and
// reschedules the group in one step, so that an intake running at the same moment can never
// leave a queued message behind a group that was just dropped from the due index.
//
// Known limit: the script derives the message key from the popped id, so the keys it touches
// are not all declared; it runs on one Redis server, not on a Redis Cluster.

import TernCore

enum Scripts {
    /// KEYS: 1 group queue, 2 due index, 3 group pace, 4 ready stream, 5 held organisations,
    /// 6 the source IP's warm-up counts today, 7 the organisations' caps (`orgCaps`), 8 the
    /// operators' pauses (`pauses`, Control.swift), 9 the group's due messages by engagement
    /// (`groupDue`), 10 the deadlines (`deadlines`), 11 the messages set expired awaiting
    /// their event (`expiring`).
    /// ARGV: 1 group name, 2 now (ms), 3 interval (ms), 4 source ip, 5 helo, 6 message key prefix,
    /// 7 how long a held message waits before it is looked at again (ms), 8 the warm-up cap
    /// name, 9 the IP's allowance under it now ("" not in warm-up, "none" counted uncapped),
    /// 10 the organisation counters' key prefix, 11 this hour's and 12 today's bucket names,
    /// 13 ms to the next hour, 14 ms to the next UTC day, 15 the group's provider name,
    /// 16 the prefix of the organisations' pause-held hashes, 17 the lead per point of
    /// engagement (ms), 18 the score of a message without one, 19 the engagement threshold
    /// below which a message takes the IP of 20 (helo 21) instead of 4 ("" for none), or waits
    /// until 22 when that is not "" (no such IP may send now), 23 the organisations'
    /// engagement key prefix; 24, 25 and each pair after them: the source IP and helo of one
    /// more message to release in this call (a burst; these count against no warm-up cap).
    /// Returns one outcome per message looked at, in order:
    /// {"paced"|"empty"|"capped"|"routed"|"released"|"dropped"|"expired"|"held", id,
    /// attempt or org, first hold or the source IP, and for a hold by an organisation's cap
    /// "hour" or "day", by its pause "pause"}, or {"paused", first due id or "", the pause's
    /// field, first hold}. "paced", "empty", "paused", "capped" and "routed" end the call,
    /// and so does a release under a pace (ARGV 3 above 0); the others go on to the next.
    ///
    /// Messages that have come due move from the queue to the due set, ranked by due time
    /// less their score × ARGV 17 (at most 100 a call: a backlog moves over a few calls); the
    /// lowest rank goes next. A held message goes back to the queue. A message due for the
    /// first time without a score takes the one its organisation recorded (`engagement:`,
    /// by the record's `rcpt_key`), or is marked `default`.
    ///
    /// A paused group, pool or provider pops nothing and looks again in a second; a message
    /// of a paused organisation waits an hour in its queue and is noted in `pause-held:<org>`,
    /// which a resume uses to make it due again at once (Control.swift). Both checks are in
    /// this step, so no message is released after the pause that stops it was written.
    ///
    /// An organisation's hourly and daily caps are checked and counted here too, for the
    /// messages actually released only: a message held for any reason uses no budget.
    ///
    /// The warm-up check comes before the count, both here, so two schedulers can never
    /// release past an IP's cap together; only a message actually released is counted.
    ///
    /// The held hash maps an organisation whose circuit breaker is not closed to the trial
    /// messages it may still send: 0 while open, counted down while half-open.
    ///
    /// A popped message past its deadline (`expires_ms`) is not released but set `expired`
    /// in this step, so it is never both sent and expired; its id goes to `expiring`, which
    /// the scheduler empties as it writes the event (`expireOverdue`). A message held by a
    /// pause, a cap or the breaker goes back to its queue due no later than its deadline.
    /// Messages that are never popped (their group, pool or provider paused, a warm-up or
    /// engagement wait) are left to the deadline sweep, so no step here scans a group.
    static let release = RedisScript("""
        local function expire(id, key, org, held)
          redis.call('HSET', key, 'state', 'expired')
          redis.call('HDEL', key, 'held')
          redis.call('HDEL', ARGV[16] .. org, id)
          redis.call('ZREM', KEYS[10], id)
          redis.call('HSET', KEYS[11], id, held or '')
        end
        local function reschedule(notBefore)
          if redis.call('ZCARD', KEYS[9]) > 0 then
            redis.call('ZADD', KEYS[2], notBefore, ARGV[1])
            return
          end
          local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
          if #first == 0 then
            redis.call('ZREM', KEYS[2], ARGV[1])
          else
            redis.call('ZADD', KEYS[2], math.max(tonumber(first[2]), notBefore), ARGV[1])
          end
        end
        local now = tonumber(ARGV[2])
        -- Without an interval no pace is kept (one left from an earlier setting lapses).
        local pace = 0
        if ARGV[3] ~= '0' then pace = tonumber(redis.call('GET', KEYS[3]) or '0') end
        if pace > now then
          reschedule(pace)
          return {{'paced'}}
        end
        local default = tonumber(ARGV[18])
        local came = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES',
                                'LIMIT', 0, 100)
        if #came > 0 then
          local lead, ids = tonumber(ARGV[17]), {}
          for i = 1, #came, 2 do
            local key = ARGV[6] .. came[i]
            local m = redis.call('HMGET', key, 'engagement', 'engagement_source', 'org', 'rcpt',
                                 'rcpt_key')
            local e = tonumber(m[1] or '')
            if not m[2] then
              -- First time due: the score the organisation recorded for the address, kept
              -- on the record so that every later attempt ranks the same.
              -- A record written before rcpt_key: its address, ASCII-lowercased.
              e = tonumber(redis.call('HGET', ARGV[23] .. (m[3] or ''),
                                      m[5] or string.lower(m[4] or '')) or '')
              if e then
                redis.call('HSET', key, 'engagement', e, 'engagement_source', 'recorded')
              else
                redis.call('HSET', key, 'engagement_source', 'default')
              end
            end
            redis.call('ZADD', KEYS[9], tonumber(came[i + 1]) - (e or default) * lead, came[i])
            ids[#ids + 1] = came[i]
          end
          redis.call('ZREM', KEYS[1], unpack(ids))
        end
        -- The source IP (and HELO) of each message this call may release, in order.
        local sources = {{ARGV[4], ARGV[5]}}
        for i = 24, #ARGV - 1, 2 do sources[#sources + 1] = {ARGV[i], ARGV[i + 1]} end
        local due = redis.call('ZRANGE', KEYS[9], 0, #sources - 1)
        if #due == 0 then
          reschedule(now)
          return {{'empty'}}
        end
        local pool = string.match(ARGV[1], '^[^:]*')
        local fields = {'group:' .. ARGV[1], 'pool:' .. pool, 'provider:' .. ARGV[15]}
        local paused = redis.call('HMGET', KEYS[8], fields[1], fields[2], fields[3])
        for i = 1, 3 do
          if paused[i] then
            reschedule(now + 1000)
            local first = 0
            if redis.call('EXISTS', ARGV[6] .. due[1]) == 1 then
              first = redis.call('HSETNX', ARGV[6] .. due[1], 'held', 'pause')
            end
            return {{'paused', due[1], fields[i], tostring(first)}}
          end
        end
        local threshold = tonumber(ARGV[19])
        local interval = tonumber(ARGV[3])
        local orgPaused, orgCaps = {}, {}
        -- One due message: its outcome, whether the call stops there, and when the group
        -- may send next. Only the first message counts against a warm-up cap (ARGV 8, 9).
        local function one(id, ip, helo, limit)
          if threshold then
            local e = redis.call('HGET', ARGV[6] .. id, 'engagement')
            if (tonumber(e or '') or default) < threshold then
              if ARGV[22] ~= '' then return {'routed', id}, true, tonumber(ARGV[22]) end
              ip, helo, limit = ARGV[20], ARGV[21], ''
            end
          end
          if limit ~= '' and limit ~= 'none' then
            local sent = tonumber(redis.call('HGET', KEYS[6], ARGV[8]) or '0')
            if sent >= tonumber(limit) then return {'capped'}, true, now + 1000 end
          end
          redis.call('ZREM', KEYS[9], id)
          local key = ARGV[6] .. id
          local m = redis.call('HMGET', key, 'state', 'org', 'expires_ms', 'held')
          local state = m[1]
          if (not state) or (state ~= 'queued' and state ~= 'deferred') then
            return {'dropped', id}, false, now
          end
          local org = m[2] or ''
          local deadline = tonumber(m[3] or '') or 0
          if deadline > 0 and deadline <= now then
            expire(id, key, org, m[4])
            return {'expired', id}, false, now
          end
          -- A held message comes back no later than its deadline, to be expired then.
          local function upTo(at)
            if deadline > 0 and deadline < at then return deadline end
            return at
          end
          if orgPaused[org] == nil then
            orgPaused[org] = redis.call('HEXISTS', KEYS[8], 'org:' .. org) == 1
          end
          if orgPaused[org] then
            redis.call('ZADD', KEYS[1], upTo(now + 3600000), id)
            redis.call('HSET', ARGV[16] .. org, id, ARGV[1])
            local first = redis.call('HSETNX', key, 'held', 'pause')
            return {'held', id, org, tostring(first), 'pause'}, false, now
          end
          if orgCaps[org] == nil then orgCaps[org] = redis.call('HGET', KEYS[7], org) or false end
          local caps = orgCaps[org]
          local hourKey, dayKey
          if caps then
            local hourly, daily = string.match(caps, '^(%d+),(%d+)$')
            hourKey = ARGV[10] .. org .. ':h:' .. ARGV[11]
            dayKey = ARGV[10] .. org .. ':d:' .. ARGV[12]
            local wait, which = nil, nil
            if daily and tonumber(daily) > 0
               and tonumber(redis.call('GET', dayKey) or '0') >= tonumber(daily) then
              wait, which = tonumber(ARGV[14]), 'day'
            elseif hourly and tonumber(hourly) > 0
               and tonumber(redis.call('GET', hourKey) or '0') >= tonumber(hourly) then
              wait, which = tonumber(ARGV[13]), 'hour'
            end
            if wait then
              redis.call('ZADD', KEYS[1], upTo(now + wait), id)
              local first = redis.call('HSETNX', key, 'held', 'cap')
              return {'held', id, org, tostring(first), which}, false, now
            end
          end
          local trial = redis.call('HGET', KEYS[5], org)
          if trial then
            if tonumber(trial) <= 0 then
              redis.call('ZADD', KEYS[1], upTo(now + tonumber(ARGV[7])), id)
              local first = redis.call('HSETNX', key, 'held', 'breaker')
              return {'held', id, org, tostring(first)}, false, now
            end
            redis.call('HINCRBY', KEYS[5], org, -1)
          end
          if m[4] then redis.call('HDEL', key, 'held') end
          local attempt = redis.call('HINCRBY', key, 'attempts', 1)
          redis.call('HSET', key, 'state', 'sending')
          redis.call('XADD', KEYS[4], '*', 'id', id, 'attempt', attempt, 'ip', ip,
                     'helo', helo)
          if limit ~= '' then
            redis.call('HINCRBY', KEYS[6], ARGV[8], 1)
            redis.call('EXPIRE', KEYS[6], 259200)
          end
          if caps then
            redis.call('INCR', hourKey)
            redis.call('EXPIRE', hourKey, 7200)
            redis.call('INCR', dayKey)
            redis.call('EXPIRE', dayKey, 172800)
          end
          if interval > 0 then
            redis.call('SET', KEYS[3], now + interval, 'PX', interval + 1000)
            -- Paced: one message a call, whatever was asked.
            return {'released', id, tostring(attempt), ip}, true, now + interval
          end
          return {'released', id, tostring(attempt), ip}, false, now
        end
        local outcomes, notBefore = {}, now
        for k = 1, #due do
          local limit = ''
          if k == 1 then limit = ARGV[9] end
          local outcome, stop, at = one(due[k], sources[k][1], sources[k][2], limit)
          outcomes[#outcomes + 1] = outcome
          notBefore = at
          if stop then break end
        end
        reschedule(notBefore)
        return outcomes
        """)

    /// KEYS: 1 deadlines, 2 expiring. ARGV: 1 now (ms), 2 message key prefix, 3 group queue
    /// key prefix, 4 group due set key prefix, 5 pause-held key prefix, 6 at most this many.
    /// Returns the `expiring` hash (id, held, ...): what still needs its event.
    ///
    /// The deadline sweep: a message past its deadline that still waits (`queued` or
    /// `deferred`) leaves its group's queue and due set and its organisation's pause-held
    /// hash and is set `expired`, in one step, as the release script does for one it pops;
    /// the id of a message in a sender's hands or final just leaves the index (a result
    /// past the deadline expires it, `RetryPolicy`). This is what ends a message whose group,
    /// pool or provider is paused, or whose group waits on warm-up or a warm IP: the cost is
    /// O(log n) per expired message, and the release script stays O(log n) per group.
    static let expireOverdue = RedisScript("""
        local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
                               tonumber(ARGV[6]))
        for _, id in ipairs(ids) do
          local key = ARGV[2] .. id
          local m = redis.call('HMGET', key, 'state', 'pool', 'domain', 'org', 'held')
          if m[1] == 'queued' or m[1] == 'deferred' then
            local group = (m[2] or '') .. ':' .. (m[3] or '')
            redis.call('ZREM', ARGV[3] .. group, id)
            redis.call('ZREM', ARGV[4] .. group, id)
            redis.call('HSET', key, 'state', 'expired')
            redis.call('HDEL', key, 'held')
            redis.call('HDEL', ARGV[5] .. (m[4] or ''), id)
            redis.call('HSET', KEYS[2], id, m[5] or '')
          end
          redis.call('ZREM', KEYS[1], id)
        end
        return redis.call('HGETALL', KEYS[2])
        """)
}
