//! Connection state recovery, as socket.io 4.6 speaks it: a socket whose
//! connection was lost (not left) is kept for a while, with the events sent
//! to it meanwhile, and a client that comes back with the socket's private
//! id (`pid`) gets the same socket and those events.
//!
//! [`Kept`] is what one socket keeps: a pure state machine, the time passed
//! in. The server (`server.rs`) holds the sockets that are away and their
//! deadlines; the socket (`socket.rs`) feeds its kept packets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::base64;

/// The most events one socket keeps for its recovery. A call's worth of
/// signaling (an offer, an answer, a few dozen candidates) fits many times.
pub const MAX_KEPT_PACKETS: usize = 256;

/// The most bytes one socket keeps for its recovery: several SDPs.
pub const MAX_KEPT_BYTES: usize = 512 * 1024;

/// The most bytes all the sockets of a server keep together. Past it a
/// socket that is away is given up (its client gets a fresh socket), and
/// one that is connected stops keeping what it was sent.
pub const MAX_KEPT_TOTAL: usize = 32 * 1024 * 1024;

/// Recovery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// How long a lost socket is kept for its client to come back; zero
    /// turns recovery off.
    pub window: Duration,
    /// Whether events carry socket.io's offset as an extra last argument,
    /// so that events in flight when the connection died are sent again.
    pub offsets: bool,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            window: Duration::from_secs(120),
            offsets: false,
        }
    }
}

impl Recovery {
    /// Whether sockets can be recovered at all.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}

/// One event kept for a socket.
#[derive(Debug)]
struct KeptPacket {
    /// Its place in the server's sequence; on the wire as the offset.
    offset: u64,
    /// When it was sent (or kept, while away).
    at: Instant,
    text: String,
    attachments: Vec<Vec<u8>>,
}

impl KeptPacket {
    fn bytes(&self) -> usize {
        self.text.len() + self.attachments.iter().map(Vec::len).sum::<usize>()
    }
}

/// A packet as kept: its text, and its binary attachments.
pub type KeptPacketParts = (String, Vec<Vec<u8>>);

/// What a recovery sends again: whether the client's offset was found, and
/// the packets in order.
pub type Replay = (bool, Vec<KeptPacketParts>);

/// Why a packet could not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Past the socket's own bound (count or bytes).
    Socket,
    /// Past the bound on what all sockets keep.
    Total,
}

/// The events one socket keeps: while it is away, everything it is sent
/// (bounded, or it cannot be recovered); with offsets on, while connected
/// too, the events of the last recovery window, so that a client's last
/// offset finds what came after it.
#[derive(Debug, Default)]
pub struct Kept {
    packets: VecDeque<KeptPacket>,
    bytes: usize,
    /// The offset of the first packet kept since the socket went away;
    /// `None` while it is connected.
    away_from: Option<u64>,
}

impl Kept {
    /// How many bytes the kept packets hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many packets are kept.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Whether the socket is away.
    pub fn is_away(&self) -> bool {
        self.away_from.is_some()
    }

    /// The socket went away: what is sent from now on (offset `next` and
    /// later) is kept for its return.
    pub fn away(&mut self, next: u64) {
        self.away_from = Some(next);
    }

    /// Keeps an event. `total` is what all sockets keep, this one included;
    /// it is updated. While away a packet past a bound is an error (the
    /// socket cannot be recovered whole); while connected, the oldest go
    /// first, then those older than `window`, and past the total bound
    /// nothing is kept (a client's offset is then not found, and only what
    /// is kept while away is sent again).
    pub fn push(
        &mut self,
        offset: u64,
        now: Instant,
        text: String,
        attachments: Vec<Vec<u8>>,
        window: Duration,
        total: &mut usize,
    ) -> Result<(), Full> {
        let packet = KeptPacket {
            offset,
            at: now,
            text,
            attachments,
        };
        let size = packet.bytes();
        if self.is_away() {
            if self.packets.len() >= MAX_KEPT_PACKETS || self.bytes + size > MAX_KEPT_BYTES {
                return Err(Full::Socket);
            }
            if *total + size > MAX_KEPT_TOTAL {
                return Err(Full::Total);
            }
        } else {
            while let Some(front) = self.packets.front()
                && (self.packets.len() >= MAX_KEPT_PACKETS
                    || self.bytes + size > MAX_KEPT_BYTES
                    || front.at + window < now)
            {
                self.drop_front(total);
            }
            if size > MAX_KEPT_BYTES || *total + size > MAX_KEPT_TOTAL {
                self.clear(total);
                return Err(Full::Total);
            }
        }
        self.bytes += size;
        *total += size;
        self.packets.push_back(packet);
        Ok(())
    }

    fn drop_front(&mut self, total: &mut usize) {
        if let Some(front) = self.packets.pop_front() {
            let size = front.bytes();
            self.bytes -= size;
            *total -= size;
        }
    }

    /// Drops everything, giving its bytes back to `total`.
    pub fn clear(&mut self, total: &mut usize) {
        *total -= self.bytes;
        self.bytes = 0;
        self.packets = VecDeque::new();
    }

    /// The socket is back: the packets to send again, in order. After the
    /// client's last offset when it is kept (offsets on), else those kept
    /// since the socket went away. With `offsets`, what was sent stays kept
    /// as the log the next offset is looked up in; without, nothing does.
    /// Also says whether the client's offset was found (what follows it is
    /// then everything it missed).
    pub fn recover(
        &mut self,
        last_offset: Option<u64>,
        offsets: bool,
        total: &mut usize,
    ) -> Replay {
        let found = last_offset.filter(|_| offsets).and_then(|last| {
            self.packets
                .iter()
                .position(|p| p.offset == last)
                .map(|i| i + 1)
        });
        let from = found.unwrap_or_else(|| {
            let away_from = self.away_from.unwrap_or(u64::MAX);
            self.packets
                .iter()
                .position(|p| p.offset >= away_from)
                .unwrap_or(self.packets.len())
        });
        self.away_from = None;
        if offsets {
            let replay = self
                .packets
                .iter()
                .skip(from)
                .map(|p| (p.text.clone(), p.attachments.clone()))
                .collect();
            return (found.is_some(), replay);
        }
        *total -= self.bytes;
        self.bytes = 0;
        let replay = std::mem::take(&mut self.packets)
            .into_iter()
            .skip(from)
            .map(|p| (p.text, p.attachments))
            .collect();
        (false, replay)
    }
}

/// The CONNECT payload's fields for recovery: `pid`, and the last
/// `offset` the client received (offsets on).
#[derive(Debug, Default, Deserialize)]
pub struct Returning {
    /// The socket's private id, as the last CONNECT answer gave it.
    pub pid: Option<String>,
    /// The offset of the last event the client received.
    pub offset: Option<String>,
}

impl Returning {
    /// Reads the fields from a CONNECT payload; anything else in it is the
    /// application's.
    pub fn read(auth: Option<&RawValue>) -> Returning {
        auth.and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }

    /// The offset as a number, when it is one of ours.
    pub fn last_offset(&self) -> Option<u64> {
        self.offset.as_deref().and_then(|o| o.parse().ok())
    }
}

/// Makes each socket's private id from a key only the server knows: the
/// id is unguessable without it, and needs no room in the socket.
pub struct Pids {
    key: [u8; 32],
}

impl Pids {
    /// A fresh key.
    pub fn new() -> Pids {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            log::warn!("no randomness from the OS; recovery ids are predictable");
        }
        Pids { key }
    }

    /// The private id of socket `sid` in namespace `nsp`, first made on the
    /// Engine.IO session `origin`: that session's id, a dot, and 22
    /// characters of MAC. It stays the socket's for its life (a client
    /// reports `recovered` only when the pid is the same). The session's id
    /// finds the socket when its client comes back before its old
    /// connection is known to be dead (a polling client, a TCP connection
    /// lost without a word); the MAC makes the whole unguessable.
    pub fn of(&self, nsp: &str, sid: &str, origin: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for part in [nsp, sid, origin] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        let tag = mac.finalize().into_bytes();
        let mut pid = String::with_capacity(origin.len() + 23);
        pid.push_str(origin);
        pid.push('.');
        base64::encode_url_into(&tag[..16], &mut pid);
        pid
    }

    /// The Engine.IO session a pid was made on (unchecked: compare the pid
    /// with [`of`](Pids::of) before trusting it).
    pub fn origin_of(pid: &str) -> Option<&str> {
        pid.rsplit_once('.').map(|(session, _)| session)
    }
}

impl Default for Pids {
    fn default() -> Pids {
        Pids::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    fn push(kept: &mut Kept, offset: u64, at: Instant, total: &mut usize) -> Result<(), Full> {
        kept.push(offset, at, format!("e{offset}"), Vec::new(), WINDOW, total)
    }

    fn texts((_, replay): Replay) -> Vec<String> {
        replay.into_iter().map(|(text, _)| text).collect()
    }

    #[test]
    fn without_offsets_what_was_kept_while_away_comes_back_once() {
        let t0 = Instant::now();
        let mut total = 0;
        let mut kept = Kept::default();
        kept.away(5);
        for offset in 5..8 {
            push(&mut kept, offset, t0, &mut total).unwrap();
        }
        assert_eq!((kept.len(), kept.bytes(), total), (3, 6, 6));
        // The client's offset (none, or anything) does not matter.
        assert_eq!(
            texts(kept.recover(Some(6), false, &mut total)),
            ["e5", "e6", "e7"]
        );
        assert!(kept.is_empty() && !kept.is_away());
        assert_eq!(total, 0);
        // Nothing twice, even when nothing came.
        kept.away(8);
        assert!(kept.recover(None, false, &mut total).1.is_empty());
    }

    #[test]
    fn with_offsets_events_in_flight_come_back_after_the_last_offset() {
        let t0 = Instant::now();
        let mut total = 0;
        let mut kept = Kept::default();
        // Sent while connected: 0..4; the client saw up to 1 when it died.
        for offset in 0..4 {
            push(&mut kept, offset, t0, &mut total).unwrap();
        }
        kept.away(4);
        push(&mut kept, 4, t0, &mut total).unwrap();
        assert_eq!(
            texts(kept.recover(Some(1), true, &mut total)),
            ["e2", "e3", "e4"]
        );
        // What it has stays the log the next offset is found in.
        assert_eq!(kept.len(), 5);
        // An offset not kept (too old, or not ours): only what came while away.
        kept.away(5);
        push(&mut kept, 5, t0, &mut total).unwrap();
        assert_eq!(texts(kept.recover(Some(999), true, &mut total)), ["e5"]);
        kept.away(6);
        assert!(kept.recover(None, true, &mut total).1.is_empty());
        kept.clear(&mut total);
        assert_eq!(total, 0);
    }

    #[test]
    fn while_connected_the_log_follows_the_window_and_its_bounds() {
        let t0 = Instant::now();
        let mut total = 0;
        let mut kept = Kept::default();
        push(&mut kept, 0, t0, &mut total).unwrap();
        // Older than the window: gone when the next comes.
        push(
            &mut kept,
            1,
            t0 + WINDOW + Duration::from_secs(1),
            &mut total,
        )
        .unwrap();
        assert_eq!(kept.len(), 1);
        for offset in 2..(MAX_KEPT_PACKETS as u64 + 10) {
            push(&mut kept, offset, t0 + WINDOW, &mut total).unwrap();
        }
        assert_eq!(kept.len(), MAX_KEPT_PACKETS);
        assert_eq!(total, kept.bytes());
    }

    #[test]
    fn while_away_past_a_bound_the_socket_cannot_be_recovered() {
        let t0 = Instant::now();
        let mut total = 0;
        let mut kept = Kept::default();
        kept.away(0);
        for offset in 0..MAX_KEPT_PACKETS as u64 {
            push(&mut kept, offset, t0, &mut total).unwrap();
        }
        assert_eq!(push(&mut kept, 999, t0, &mut total), Err(Full::Socket));
        let mut kept = Kept::default();
        kept.away(0);
        let big = "x".repeat(MAX_KEPT_BYTES);
        assert_eq!(kept.push(0, t0, big, Vec::new(), WINDOW, &mut 0), Ok(()));
        assert_eq!(
            kept.push(1, t0, "y".into(), Vec::new(), WINDOW, &mut 0),
            Err(Full::Socket)
        );
        // The bound on all sockets together.
        let mut kept = Kept::default();
        kept.away(0);
        let mut total = MAX_KEPT_TOTAL - 1;
        assert_eq!(push(&mut kept, 0, t0, &mut total), Err(Full::Total));
        assert_eq!(total, MAX_KEPT_TOTAL - 1);
    }

    #[test]
    fn pids_are_private_and_stable() {
        let pids = Pids::new();
        let pid = pids.of("/", "abc", "s1");
        assert_eq!(pid.len(), 2 + 1 + 22);
        assert_eq!(Pids::origin_of(&pid), Some("s1"));
        assert_eq!(pid, pids.of("/", "abc", "s1"));
        assert_ne!(pid, pids.of("/", "abd", "s1"));
        assert_ne!(pid, pids.of("/x", "abc", "s1"));
        assert_ne!(pid, pids.of("/", "abc", "s2"));
        assert_ne!(pid, Pids::new().of("/", "abc", "s1"));
    }

    #[test]
    fn the_connect_payload_names_pid_and_offset() {
        let raw = RawValue::from_string(r#"{"token":"t","pid":"p","offset":"12"}"#.into()).unwrap();
        let back = Returning::read(Some(&raw));
        assert_eq!(
            (back.pid.as_deref(), back.last_offset()),
            (Some("p"), Some(12))
        );
        for odd in [r#"{"pid":5}"#, r#"[1]"#, r#"{"offset":"x"}"#] {
            let raw = RawValue::from_string(odd.into()).unwrap();
            assert!(Returning::read(Some(&raw)).last_offset().is_none(), "{odd}");
        }
        assert!(Returning::read(None).pid.is_none());
    }
}
