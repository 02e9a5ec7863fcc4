//! Server pushes: what changes about a client's peers, sent to the client unasked.
//!
//! A push about B goes to a watching client A when B's endpoint is first known or moves, or when
//! B's confirmed punch makes A's *peer has yours* for B true. It goes only to A's registration
//! endpoint (the source of A's latest authenticated message) through the session that message
//! came on, and only within that session's budget: at most [`PUSH_WINDOW`] unacknowledged and
//! [`PUSH_RATE`] a second (bursts of [`PUSH_BURST`]). What does not fit is not sent; the client's
//! periodic lookups are the fallback. Every push waits in a queue of at most
//! [`MAX_QUEUED_PUSHES`] datagrams for [`Server::poll_transmit`].

use std::net::SocketAddr;
use std::time::Instant;

use tracing::trace;

use super::limits::Bucket;
use super::Server;
use crate::keys::PublicKey;
use crate::wire::message::{PUSH_DATAGRAM_LEN, PUSH_LEN};
use crate::wire::{Push, Reply};

/// Most pushes of one session that may wait for their acknowledgement.
pub const PUSH_WINDOW: u32 = 8;
/// Pushes a second one session may be sent, however fast it acknowledges.
pub const PUSH_RATE: u32 = 10;
/// The burst of pushes one session may be sent.
pub const PUSH_BURST: u32 = 10;
/// Most pushes queued for [`Server::poll_transmit`]; beyond that they are dropped (and counted).
pub const MAX_QUEUED_PUSHES: usize = 4096;

/// A datagram the server wants sent that is not the reply to the datagram being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes: an endpoint an authenticated message of its session came from.
    pub destination: SocketAddr,
    /// The whole datagram.
    pub datagram: Vec<u8>,
}

/// The push budget of one session, dropped with it.
#[derive(Debug)]
pub(super) struct PushBudget {
    /// The sequence of the last push sent (0: none yet).
    sent: u32,
    /// The highest sequence acknowledged, never above `sent`.
    acked: u32,
    bucket: Bucket,
}

impl PushBudget {
    /// A budget for a session made at `now`: nothing sent, a full bucket.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            sent: 0,
            acked: 0,
            bucket: Bucket::full(PUSH_BURST, now),
        }
    }

    /// Takes a cumulative acknowledgement; one for a sequence never sent is ignored.
    pub(super) fn ack(&mut self, acked: u32) {
        if acked > self.acked && acked <= self.sent {
            self.acked = acked;
        }
    }

    /// The sequence for one more push, if the window and the bucket have room for it.
    fn take(&mut self, now: Instant) -> Option<u32> {
        if self.sent.saturating_sub(self.acked) >= PUSH_WINDOW || self.sent == u32::MAX {
            return None;
        }
        if !self.bucket.take(PUSH_RATE, PUSH_BURST, now) {
            return None;
        }
        self.sent += 1;
        Some(self.sent)
    }
}

impl Server {
    /// The next datagram queued by [`Server::handle`] for another destination than the sender
    /// (a push), if any. Call it until it gives `None` after handling datagrams.
    pub fn poll_transmit(&mut self) -> Option<super::Transmit> {
        self.transmits.pop_front()
    }

    /// `subject`'s sighting changed (first registration or a new endpoint): pushes it to every
    /// live, watching registration that `subject` lists and that lists it back.
    pub(super) fn push_about(&mut self, subject: PublicKey, now: Instant) {
        for watcher in self.registry.watchers(&subject, now) {
            self.push_to(watcher, subject, now);
        }
    }

    /// What `watcher`'s lookup of `subject` would say about *peer has yours* right now, if
    /// `watcher` watches and may be told about `subject` at all.
    pub(super) fn watched_flag(
        &self,
        watcher: &PublicKey,
        subject: &PublicKey,
        now: Instant,
    ) -> Option<bool> {
        self.registry
            .get(watcher, now)
            .filter(|r| r.watch)
            .and(self.registry.sighting(watcher, subject, now))
            .map(|s| s.peer_has_yours)
    }

    /// Pushes `subject`'s current sighting to `watcher`, within the budget of the session that
    /// `watcher`'s last authenticated message came on, and remembers what `watcher` was told.
    pub(super) fn push_to(&mut self, watcher: PublicKey, subject: PublicKey, now: Instant) {
        if watcher == subject {
            return;
        }
        let Some(registration) = self.registry.get(&watcher, now).filter(|r| r.watch) else {
            return;
        };
        let (destination, index) = (registration.endpoint, registration.session);
        let Some(sighting) = self.registry.sighting(&watcher, &subject, now) else {
            return;
        };
        let lifetime = self.config.session_lifetime;
        let Some(session) = self.sessions.get_mut(&index).filter(|s| {
            s.client == watcher
                && s.confirmed
                && now.saturating_duration_since(s.created) < lifetime
        }) else {
            trace!(peer = %watcher, "no live session to push through");
            return;
        };
        if self.transmits.len() >= MAX_QUEUED_PUSHES {
            self.stats.pushes_over_budget += 1;
            return;
        }
        let Some(sequence) = session.push.take(now) else {
            self.stats.pushes_over_budget += 1;
            return;
        };
        let mut plaintext = Vec::with_capacity(PUSH_LEN);
        Reply::Push(Push {
            sequence,
            peer: subject,
            sighting,
        })
        .emit(&mut plaintext);
        let mut datagram = Vec::with_capacity(PUSH_DATAGRAM_LEN);
        if session.session.seal(&plaintext, &mut datagram).is_err() {
            return;
        }
        self.registry
            .note_given(&watcher, &subject, sighting.endpoint, false, now);
        self.transmits.push_back(super::Transmit {
            destination,
            datagram,
        });
        self.stats.pushes += 1;
        trace!(peer = %watcher, about = %subject, sequence, "push");
    }
}
