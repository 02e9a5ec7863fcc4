//! What the server remembers of a client key between sessions, and the rules both protocols
//! (wgpunch's own and natpunch-go's) apply with it: which authenticated initiations are taken,
//! when the tables are full, how a confirmed session replaces the key's previous one, and when a
//! key's state expires. Each protocol keeps its own table of keys and sessions.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crate::handshake::unix_nanos;
use crate::keys::{PrivateKey, PublicKey};
use crate::noise::Rng;

use super::expiry::{deadline, ExpiryQueue, Verdict};
use super::limits::Bucket;
use super::ServerConfig;

/// What the server remembers of a client key between sessions.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// The timestamp of the last initiation answered: the next must be newer.
    pub(super) last_timestamp: u64,
    /// When that initiation was answered.
    pub(super) last_handshake: Option<Instant>,
    /// The session the client has used (it confirmed it).
    pub(super) current: Option<u32>,
    /// The session answered but not yet used.
    pub(super) pending: Option<u32>,
    /// The key's handshake rate, made at its second initiation.
    pub(super) handshakes: Option<Bucket>,
    /// When the key's one entry in its expiry queue falls due (`None`: not queued yet).
    pub(super) queued_at: Option<Instant>,
}

/// What the key tables need of a session: when it was made, and for which key.
pub(super) trait Held {
    /// When the session was made.
    fn created(&self) -> Instant;
    /// The key it belongs to.
    fn client(&self) -> PublicKey;
}

/// The expiry queues of one protocol's session and key tables.
#[derive(Debug, Default)]
pub(super) struct Queues {
    sessions: ExpiryQueue<u32>,
    keys: ExpiryQueue<PublicKey>,
}

/// How long a key's last timestamp is kept after its handshake: it must outlive any initiation
/// that could still pass the clock check.
fn keep_timestamps(clock_tolerance: Duration, session_lifetime: Duration) -> Duration {
    clock_tolerance
        .saturating_mul(2)
        .saturating_add(session_lifetime)
}

impl Queues {
    /// Queues the session `index` just inserted into `sessions`, and its key if that is new.
    pub(super) fn session_added<S: Held>(
        &mut self,
        sessions: &HashMap<u32, S>,
        keys: &mut HashMap<PublicKey, KeyState>,
        index: u32,
        clock_tolerance: Duration,
        session_lifetime: Duration,
    ) {
        let Some(session) = sessions.get(&index) else {
            return;
        };
        let created = session.created();
        self.sessions
            .push(deadline(created, session_lifetime), index);
        // Sessions replaced by newer ones leave stale entries: drop them once they pile up.
        self.sessions.compact(sessions.len(), |i, at| {
            sessions
                .get(i)
                .is_some_and(|s| deadline(s.created(), session_lifetime) == at)
        });
        if let Some(state) = keys.get_mut(&session.client()) {
            if state.queued_at.is_none() {
                let keep = keep_timestamps(clock_tolerance, session_lifetime);
                let at = deadline(state.last_handshake.unwrap_or(created), keep);
                state.queued_at = Some(at);
                self.keys.push(at, session.client());
            }
        }
    }

    /// Number of queue entries, valid or stale.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sessions.len() + self.keys.len()
    }
}

/// Why an initiation whose sender Noise authenticated is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A low-order (or all-zero) key: anyone could claim it; it proves nothing.
    LowOrderKey,
    /// A key not in the allowed list.
    NotAllowed,
    /// A timestamp outside the clock tolerance.
    StaleTimestamp,
    /// A timestamp not newer than the last one answered for the key.
    ReplayedInitiation,
    /// Over the key's handshake rate.
    RateLimited,
}

/// The checks an initiation from `client` carrying `timestamp` passes once Noise has
/// authenticated it, in order: a contributory key, the allowed list, the clock tolerance, a
/// timestamp newer than the key's last, the key's handshake rate (which this takes a token from).
pub(super) fn admit(
    config: &ServerConfig,
    private: &PrivateKey,
    keys: &mut HashMap<PublicKey, KeyState>,
    client: &PublicKey,
    timestamp: u64,
    wall: SystemTime,
    now: Instant,
) -> Result<(), Refusal> {
    if !client.is_contributory_with(private) {
        return Err(Refusal::LowOrderKey);
    }
    if config
        .allowed_keys
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(client))
    {
        return Err(Refusal::NotAllowed);
    }
    let tolerance = u64::try_from(config.clock_tolerance.as_nanos()).unwrap_or(u64::MAX);
    if unix_nanos(wall).abs_diff(timestamp) > tolerance {
        return Err(Refusal::StaleTimestamp);
    }
    let Some(state) = keys.get_mut(client) else {
        return Ok(());
    };
    if timestamp <= state.last_timestamp {
        return Err(Refusal::ReplayedInitiation);
    }
    let (key_rate, key_burst) = (config.key_rate, config.key_burst);
    let bucket = state
        .handshakes
        .get_or_insert_with(|| Bucket::full(key_burst, now));
    if !bucket.take(key_rate, key_burst, now) {
        return Err(Refusal::RateLimited);
    }
    Ok(())
}

/// True when an initiation cannot be taken: no room for its session (unless it replaces one of
/// the key's own, `replaces_own`) or, for a new key, for its replay-protection state.
pub(super) fn is_full<S>(
    config: &ServerConfig,
    sessions: &HashMap<u32, S>,
    keys: &HashMap<PublicKey, KeyState>,
    new_key: bool,
    replaces_own: bool,
) -> bool {
    let sessions_full = sessions.len() >= config.max_sessions && !replaces_own;
    let keys_full = new_key && keys.len() >= config.max_keys;
    sessions_full || keys_full
}

/// A random session index that `sessions` does not hold yet (`None` after 16 taken ones).
pub(super) fn free_index<S>(rng: &mut Rng, sessions: &HashMap<u32, S>) -> Option<u32> {
    (0..16)
        .map(|_| rng.next_u32())
        .find(|i| !sessions.contains_key(i))
}

/// Makes session `index` the key's current one, dropping the one it replaces.
pub(super) fn confirm<S>(
    keys: &mut HashMap<PublicKey, KeyState>,
    sessions: &mut HashMap<u32, S>,
    client: PublicKey,
    index: u32,
) {
    let state = keys.entry(client).or_default();
    if state.pending == Some(index) {
        state.pending = None;
    }
    if let Some(old) = state.current.replace(index) {
        if old != index {
            sessions.remove(&old);
        }
    }
}

/// Drops at most `budget` due sessions and keys: the sessions that have lived their lifetime
/// (forgetting their indexes in their keys), and the keys left with no live session whose last
/// handshake is old enough that no initiation replaying it could pass the clock check. Returns
/// how many queue entries it took; with an unbounded budget it leaves what [`expire`] leaves.
pub(super) fn expire_some<S: Held>(
    sessions: &mut HashMap<u32, S>,
    keys: &mut HashMap<PublicKey, KeyState>,
    queues: &mut Queues,
    now: Instant,
    clock_tolerance: Duration,
    session_lifetime: Duration,
    budget: usize,
) -> usize {
    let taken = queues.sessions.run(now, budget, |index, at| {
        let Some(session) = sessions.get(index) else {
            return Verdict::Stale;
        };
        if deadline(session.created(), session_lifetime) != at {
            // Another session now holds the index; it has its own entry.
            return Verdict::Stale;
        }
        let client = session.client();
        sessions.remove(index);
        if let Some(state) = keys.get_mut(&client) {
            state.current = state.current.filter(|i| i != index);
            state.pending = state.pending.filter(|i| i != index);
        }
        Verdict::Expired
    });
    let keep = keep_timestamps(clock_tolerance, session_lifetime);
    let sessions = &*sessions;
    taken
        + queues
            .keys
            .run(now, budget.saturating_sub(taken), |client, at| {
                let Some(state) = keys.get_mut(client) else {
                    return Verdict::Stale;
                };
                if state.queued_at != Some(at) {
                    return Verdict::Stale;
                }
                let session_until = |index: Option<u32>| {
                    index
                        .and_then(|i| sessions.get(&i))
                        .map(|s| deadline(s.created(), session_lifetime))
                        .filter(|&until| until > now)
                };
                let stamp_until = state
                    .last_handshake
                    .map(|t| deadline(t, keep))
                    .filter(|&until| until > now);
                let until = session_until(state.current)
                    .max(session_until(state.pending))
                    .max(stamp_until);
                match until {
                    Some(until) => {
                        state.queued_at = Some(until);
                        Verdict::Alive(until)
                    }
                    None => {
                        keys.remove(client);
                        Verdict::Expired
                    }
                }
            })
}

/// Forgets the indexes of sessions that are gone, and the keys left with no session whose last
/// handshake is old enough that no initiation replaying it could pass the clock check: the full
/// sweep that [`expire_some`] does a little at a time, kept as the reference its tests compare
/// against.
#[cfg(test)]
pub(super) fn expire<S>(
    keys: &mut HashMap<PublicKey, KeyState>,
    sessions: &HashMap<u32, S>,
    now: Instant,
    clock_tolerance: Duration,
    session_lifetime: Duration,
) {
    let keep_timestamps = keep_timestamps(clock_tolerance, session_lifetime);
    keys.retain(|_, k| {
        k.current = k.current.filter(|i| sessions.contains_key(i));
        k.pending = k.pending.filter(|i| sessions.contains_key(i));
        k.current.is_some()
            || k.pending.is_some()
            || k.last_handshake
                .is_some_and(|t| now.saturating_duration_since(t) < keep_timestamps)
    });
}
