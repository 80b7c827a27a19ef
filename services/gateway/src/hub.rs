//! Which connections this gateway holds, by id and by user. The push
//! consumer finds a user's connections here; logins find the connection a
//! device had before.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tern_core::proto::records::{InboxRef, Receipt};
use tern_core::sync;
use tokio::sync::{mpsc, watch};

/// Work handed to a session by the push consumer.
#[derive(Debug)]
pub enum SessionEvent {
    /// New inbox entries of the session's user.
    Deliveries(Vec<InboxRef>),
    /// The persister's answer to one of the session's sends.
    Receipt(Receipt),
    /// Pushes may have been missed (the push topic was reassigned): read
    /// the inbox after the last pushed cursor.
    CatchUp,
    /// A large-group message, encoded for the session's codec (live only).
    GroupPush(bytes::Bytes),
}

/// Why a session is told to end from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Its mailbox was full: the client reads too slowly.
    SlowConsumer,
    /// The same user and device logged in on another connection.
    Replaced,
    /// The gateway is shutting down.
    GoingAway,
    /// The token it logged in with was revoked.
    Revoked,
}

#[derive(Clone)]
pub struct ConnHandle {
    pub user: String,
    pub device: String,
    /// The codec negotiated at login, for frames encoded once per codec.
    pub codec: tern_core::proto::client::Codec,
    /// When the login token was issued, ms: a revocation after it ends
    /// the connection.
    pub token_issued_at_ms: u64,
    pub mailbox: mpsc::Sender<SessionEvent>,
    pub kick: watch::Sender<Option<Kick>>,
}

impl ConnHandle {
    /// Hands an event to the session without waiting; a full mailbox
    /// disconnects it (the client will catch up from its inbox).
    pub fn offer(&self, event: SessionEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.mailbox.try_send(event) {
            self.kick.send_replace(Some(Kick::SlowConsumer));
        }
    }

    /// Hands over a best-effort event; false if the mailbox was full (the
    /// event is dropped, the session is left alone).
    pub fn offer_best_effort(&self, event: SessionEvent) -> bool {
        self.mailbox.try_send(event).is_ok()
    }
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, ConnHandle>,
    /// user → device → connection id.
    by_user: HashMap<String, HashMap<String, u64>>,
    /// user → every connection id of theirs, send-only ones too (for
    /// revocations and counts).
    all_by_user: HashMap<String, HashSet<u64>>,
    /// Revocations seen in the last [`RECENT`], by user: (device, or ""
    /// for all; tokens issued before this ms; when seen). A login that
    /// read the store just before a revocation and registers just after
    /// it is ended by these.
    recent_revocations: HashMap<String, Vec<(String, u64, Instant)>>,
}

/// How long a revocation is remembered for logins in flight: far longer
/// than a login takes from its store read to its registration here.
const RECENT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Hub {
    inner: RwLock<Inner>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a logged-in connection. A receiving connection (`receives`)
    /// becomes its device's current one and the connection the device had
    /// before is returned, for the caller to end. A send-only connection
    /// (bots, `tern send`) is only reachable by id, for its receipts: it
    /// neither replaces nor is replaced.
    pub fn insert(&self, id: u64, handle: ConnHandle, receives: bool) -> Option<ConnHandle> {
        let mut inner = sync::write(&self.inner);
        let revoked = inner
            .recent_revocations
            .get(&handle.user)
            .is_some_and(|list| {
                list.iter().any(|(device, before_ms, _)| {
                    (device.is_empty() || *device == handle.device)
                        && handle.token_issued_at_ms < *before_ms
                })
            });
        if revoked {
            handle.kick.send_replace(Some(Kick::Revoked));
        }
        inner
            .all_by_user
            .entry(handle.user.clone())
            .or_default()
            .insert(id);
        let previous = receives
            .then(|| {
                inner
                    .by_user
                    .entry(handle.user.clone())
                    .or_default()
                    .insert(handle.device.clone(), id)
            })
            .flatten();
        inner.conns.insert(id, handle);
        let replaced = previous
            .filter(|p| *p != id)
            .and_then(|p| inner.conns.remove(&p));
        if let Some(old) = &replaced {
            let Inner {
                conns, all_by_user, ..
            } = &mut *inner;
            if let Some(ids) = all_by_user.get_mut(&old.user) {
                ids.retain(|c| conns.contains_key(c));
            }
        }
        replaced
    }

    /// Removes a connection; returns true if it was still the device's
    /// current one (so its route should be removed too).
    pub fn remove(&self, id: u64) -> bool {
        let mut inner = sync::write(&self.inner);
        let Some(handle) = inner.conns.remove(&id) else {
            return false;
        };
        if let Some(ids) = inner.all_by_user.get_mut(&handle.user) {
            ids.remove(&id);
            if ids.is_empty() {
                inner.all_by_user.remove(&handle.user);
            }
        }
        let mut current = false;
        if let Some(devices) = inner.by_user.get_mut(&handle.user) {
            if devices.get(&handle.device) == Some(&id) {
                devices.remove(&handle.device);
                current = true;
            }
            if devices.is_empty() {
                inner.by_user.remove(&handle.user);
            }
        }
        current
    }

    pub fn get(&self, id: u64) -> Option<ConnHandle> {
        sync::read(&self.inner).conns.get(&id).cloned()
    }

    /// Every connection of `user` on this gateway.
    pub fn user_conns(&self, user: &str) -> Vec<ConnHandle> {
        let inner = sync::read(&self.inner);
        inner
            .by_user
            .get(user)
            .map(|devices| {
                devices
                    .values()
                    .filter_map(|id| inner.conns.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Offers an event to every connection.
    pub fn offer_all(&self, event: impl Fn() -> SessionEvent) {
        for handle in sync::read(&self.inner).conns.values() {
            handle.offer(event());
        }
    }

    /// Ends the connections of `user` (on `device`, or on any device) that
    /// logged in with a token issued before `before_ms`; returns how many.
    pub fn revoke(&self, user: &str, device: Option<&str>, before_ms: u64) -> usize {
        let mut inner = sync::write(&self.inner);
        let now = Instant::now();
        inner.recent_revocations.retain(|_, list| {
            list.retain(|(_, _, seen)| now.duration_since(*seen) < RECENT);
            !list.is_empty()
        });
        inner
            .recent_revocations
            .entry(user.to_owned())
            .or_default()
            .push((device.unwrap_or("").to_owned(), before_ms, now));
        let mut ended = 0;
        for id in inner.all_by_user.get(user).into_iter().flatten() {
            let Some(handle) = inner.conns.get(id) else {
                continue;
            };
            if device.is_none_or(|d| d == handle.device) && handle.token_issued_at_ms < before_ms {
                handle.kick.send_replace(Some(Kick::Revoked));
                ended += 1;
            }
        }
        ended
    }

    /// Whether `device` of `user` has a receiving connection here (a new
    /// login of it replaces that one).
    pub fn has_device(&self, user: &str, device: &str) -> bool {
        let inner = sync::read(&self.inner);
        inner
            .by_user
            .get(user)
            .is_some_and(|devices| devices.contains_key(device))
    }

    /// Connections of `user` on this gateway, send-only ones included.
    #[cfg(test)]
    pub fn count_user(&self, user: &str) -> usize {
        let inner = sync::read(&self.inner);
        inner.all_by_user.get(user).map_or(0, HashSet::len)
    }

    pub fn kick_all(&self, kick: Kick) {
        for handle in sync::read(&self.inner).conns.values() {
            handle.kick.send_replace(Some(kick));
        }
    }

    pub fn len(&self) -> usize {
        sync::read(&self.inner).conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(user: &str, device: &str) -> (ConnHandle, mpsc::Receiver<SessionEvent>) {
        let (tx, rx) = mpsc::channel(1);
        (
            ConnHandle {
                user: user.into(),
                device: device.into(),
                codec: tern_core::proto::client::Codec::None,
                token_issued_at_ms: 100,
                mailbox: tx,
                kick: watch::channel(None).0,
            },
            rx,
        )
    }

    #[test]
    fn a_second_login_of_a_device_replaces_the_first() {
        let hub = Hub::new();
        let (a, _ra) = handle("bob", "phone");
        let (b, _rb) = handle("bob", "phone");
        assert!(hub.insert(1, a, true).is_none());
        let old = hub.insert(2, b, true).expect("old connection returned");
        assert_eq!(old.device, "phone");
        assert_eq!(hub.user_conns("bob").len(), 1);
        // The replaced connection's removal does not remove the new one's route.
        assert!(!hub.remove(1));
        assert!(hub.remove(2));
        assert!(hub.is_empty());
    }

    #[test]
    fn a_send_only_connection_neither_replaces_nor_gets_pushes() {
        let hub = Hub::new();
        let (listener, _rl) = handle("bob", "cli");
        let (sender, _rs) = handle("bob", "cli");
        assert!(hub.insert(1, listener, true).is_none());
        assert!(hub.insert(2, sender, false).is_none(), "the listener stays");
        assert_eq!(hub.user_conns("bob").len(), 1);
        assert!(hub.get(2).is_some(), "reachable for its receipts");
        assert!(!hub.remove(2), "not the device's current connection");
        assert!(hub.remove(1));
    }

    #[test]
    fn a_revocation_ends_the_connections_it_covers() {
        let hub = Hub::new();
        let (phone, _r1) = handle("bob", "phone");
        let (laptop, _r2) = handle("bob", "laptop");
        let (carol, _r3) = handle("carol", "phone");
        let kicked = |h: &ConnHandle| *h.kick.subscribe().borrow();
        hub.insert(1, phone.clone(), true);
        hub.insert(2, laptop.clone(), false);
        hub.insert(3, carol.clone(), true);
        assert_eq!(
            hub.revoke("bob", Some("phone"), 50),
            0,
            "token issued after"
        );
        assert_eq!(hub.revoke("bob", Some("phone"), 101), 1);
        assert_eq!(kicked(&phone), Some(Kick::Revoked));
        assert_eq!(kicked(&laptop), None);
        assert_eq!(
            hub.revoke("bob", None, 101),
            2,
            "every device, send-only too"
        );
        assert_eq!(kicked(&laptop), Some(Kick::Revoked));
        assert_eq!(kicked(&carol), None);
        assert_eq!(hub.count_user("bob"), 2);
    }

    #[test]
    fn a_login_registering_just_after_a_revocation_is_ended_too() {
        let hub = Hub::new();
        hub.revoke("bob", None, 101);
        let (late, _r) = handle("bob", "phone"); // its token: issued at 100
        hub.insert(1, late.clone(), true);
        assert_eq!(*late.kick.subscribe().borrow(), Some(Kick::Revoked));
        let mut fresh = handle("bob", "laptop").0;
        fresh.token_issued_at_ms = 200;
        hub.insert(2, fresh.clone(), true);
        assert_eq!(
            *fresh.kick.subscribe().borrow(),
            None,
            "a newer token is fine"
        );
        assert!(hub.remove(1) && hub.remove(2));
        assert_eq!(hub.count_user("bob"), 0);
    }

    #[test]
    fn a_full_mailbox_kicks_the_connection() {
        let (h, _rx) = handle("bob", "phone");
        let mut kicked = h.kick.subscribe();
        h.offer(SessionEvent::Deliveries(vec![]));
        assert_eq!(*kicked.borrow_and_update(), None);
        h.offer(SessionEvent::Deliveries(vec![]));
        assert_eq!(*kicked.borrow_and_update(), Some(Kick::SlowConsumer));
    }
}
