//! Ids and their validation.
//!
//! User and device ids are chosen outside tern (by the product's identity
//! system), so they are only checked for shape. Conversation ids are derived:
//! a 1:1 conversation is `d:<user>:<user>` with the two users sorted, so both
//! sides compute the same id without a lookup.

use std::fmt;

/// Longest user or device id accepted.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} id {id:?} is invalid: use 1 to 64 characters from a-z A-Z 0-9 _ - . @")]
    Invalid { kind: &'static str, id: String },
    #[error("unknown conversation {0:?}")]
    UnknownConversation(String),
}

/// Most characters of client input an error message repeats.
const ECHO_CHARS: usize = 72;

/// Client input as an error message may quote it: whole when short, else
/// its start and its length, so a 900 KB id is not sent back (nor logged).
pub fn clip(input: &str) -> String {
    if input.chars().count() <= ECHO_CHARS {
        return input.to_owned();
    }
    let start: String = input.chars().take(ECHO_CHARS - 8).collect();
    format!("{start}… ({} bytes)", input.len())
}

fn check(kind: &'static str, id: &str) -> Result<(), IdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(IdError::Invalid { kind, id: clip(id) })
    }
}

/// Checks the shape of a user id (no `:`; conversation ids are built from them).
pub fn check_user(id: &str) -> Result<(), IdError> {
    check("user", id)
}

/// Checks the shape of a device id.
pub fn check_device(id: &str) -> Result<(), IdError> {
    check("device", id)
}

/// Checks the shape of a group id.
pub fn check_group(id: &str) -> Result<(), IdError> {
    check("group", id)
}

/// Checks the shape of a live room id.
pub fn check_room(id: &str) -> Result<(), IdError> {
    check("room", id)
}

/// A new group id: a UUIDv7 in lowercase hex (32 characters), so ids sort
/// by creation time and never collide without coordination.
pub fn new_group_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A conversation a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// 1:1 chat between two users, stored sorted (`low <= high`).
    Direct { low: String, high: String },
    /// A group chat; members are kept in the store.
    Group(String),
}

impl Conversation {
    /// The 1:1 conversation between two (valid) users.
    pub fn direct(a: &str, b: &str) -> Result<Self, IdError> {
        check_user(a)?;
        check_user(b)?;
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        Ok(Conversation::Direct {
            low: low.to_owned(),
            high: high.to_owned(),
        })
    }

    /// Parses a conversation id as produced by `Display`.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let unknown = || IdError::UnknownConversation(clip(id));
        match id.split(':').collect::<Vec<_>>().as_slice() {
            ["d", a, b] => {
                let c = Self::direct(a, b).map_err(|_| unknown())?;
                // Only the canonical (sorted) spelling names the conversation.
                if c.to_string() == id {
                    Ok(c)
                } else {
                    Err(unknown())
                }
            }
            ["g", g] => {
                check_group(g).map_err(|_| unknown())?;
                Ok(Conversation::Group((*g).to_owned()))
            }
            _ => Err(unknown()),
        }
    }

    /// The conversation of a group.
    pub fn group(id: &str) -> Result<Self, IdError> {
        check_group(id)?;
        Ok(Conversation::Group(id.to_owned()))
    }

    /// The two users of a 1:1 conversation (one for a note to self); None
    /// for a group, whose members only the store knows.
    pub fn direct_members(&self) -> Option<Vec<&str>> {
        match self {
            Conversation::Direct { low, high } if low == high => Some(vec![low]),
            Conversation::Direct { low, high } => Some(vec![low, high]),
            Conversation::Group(_) => None,
        }
    }

    /// Whether `user` takes part: Some for 1:1 conversations, None for a
    /// group (ask the store).
    pub fn has_direct_member(&self, user: &str) -> Option<bool> {
        self.direct_members().map(|m| m.contains(&user))
    }
}

impl fmt::Display for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversation::Direct { low, high } => write!(f, "d:{low}:{high}"),
            Conversation::Group(id) => write!(f, "g:{id}"),
        }
    }
}

/// Server message id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u128);

impl MessageId {
    pub fn new() -> Self {
        MessageId(uuid::Uuid::now_v7().as_u128())
    }

    /// Reads the 16-byte form carried in protobuf `bytes` fields.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(MessageId(u128::from_be_bytes(arr)))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// When the id was made, in ms since the Unix epoch (UUIDv7 keeps it
    /// in the top 48 bits): the age retention goes by.
    pub fn time_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// An id made at `ms` (for tests and tools that need a given age).
    pub fn at_time_ms(ms: u64) -> Self {
        let low = MessageId::new().0 & ((1u128 << 80) - 1);
        MessageId(((ms as u128) << 80) | low)
    }

    pub fn to_vec(self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(&self.to_bytes())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_u128(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conversation_is_the_same_from_both_sides() {
        let ab = Conversation::direct("alice", "bob").unwrap();
        let ba = Conversation::direct("bob", "alice").unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab.to_string(), "d:alice:bob");
        assert_eq!(Conversation::parse("d:alice:bob").unwrap(), ab);
    }

    #[test]
    fn non_canonical_or_foreign_conversation_ids_are_unknown() {
        for bad in [
            "d:bob:alice",
            "g:",
            "g:a b",
            "g:a:b",
            "",
            "d:alice",
            "d:a:b:c",
            "d:al ice:bob",
        ] {
            assert_eq!(
                Conversation::parse(bad),
                Err(IdError::UnknownConversation(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn group_conversations_round_trip() {
        let id = new_group_id();
        assert_eq!(id.len(), 32);
        let c = Conversation::parse(&format!("g:{id}")).unwrap();
        assert_eq!(c, Conversation::group(&id).unwrap());
        assert_eq!(c.to_string(), format!("g:{id}"));
        assert_eq!(c.direct_members(), None);
        assert!(new_group_id() > id, "group ids sort by creation time");
    }

    #[test]
    fn errors_quote_long_input_clipped() {
        let huge = "x".repeat(900_000);
        let msg = check_device(&huge).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes", msg.len());
        assert!(msg.contains("(900000 bytes)"), "{msg}");
        let msg = Conversation::parse(&huge).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes", msg.len());
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(check_user("alice.smith@example").is_ok());
        assert!(check_user("").is_err());
        assert!(check_user("a:b").is_err());
        assert!(check_user(&"x".repeat(65)).is_err());
    }

    #[test]
    fn message_ids_round_trip_and_sort_by_time() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert!(a < b);
        assert_eq!(MessageId::from_slice(&a.to_bytes()), Some(a));
        let now = crate::now_ms();
        assert!(
            a.time_ms().abs_diff(now) < 60_000,
            "{} vs {now}",
            a.time_ms()
        );
        assert_eq!(MessageId::at_time_ms(12_345).time_ms(), 12_345);
        assert_eq!(MessageId::from_slice(&[1, 2, 3]), None);
    }
}
