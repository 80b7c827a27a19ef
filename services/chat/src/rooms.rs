//! Who may join and post to which live room.
//!
//! `open`: any logged-in user, any room (public chat, a live stream's
//! comments). `token`: only rooms the login token lists in its `rooms`
//! claim: `"match-42"` allows exactly that room, `"match-42.*"` every room
//! whose id starts with `match-42.` (a trailing `*` makes a prefix, and
//! only it: `match-42` does not allow `match-420`), `"*"` every room. The
//! application's auth server decides who watches what when it signs the
//! token.

use tern_core::ids::clip;

use crate::Refusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomPolicy {
    #[default]
    Open,
    Token,
}

impl std::str::FromStr for RoomPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(RoomPolicy::Open),
            "token" => Ok(RoomPolicy::Token),
            other => Err(format!(
                "room_policy {:?} is not understood: use open or token",
                clip(other)
            )),
        }
    }
}

impl std::fmt::Display for RoomPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoomPolicy::Open => "open",
            RoomPolicy::Token => "token",
        })
    }
}

/// Checks that a user whose token lists `allowed` rooms may enter or post
/// to `room` under `policy`.
pub fn check_room(
    policy: RoomPolicy,
    allowed: Option<&[String]>,
    room: &str,
) -> Result<(), Refusal> {
    match policy {
        RoomPolicy::Open => Ok(()),
        RoomPolicy::Token => {
            let ok = allowed.is_some_and(|entries| entries.iter().any(|e| allows(e, room)));
            if ok {
                Ok(())
            } else {
                Err(Refusal::forbidden(format!(
                    "room {room} is not among the rooms this login token allows"
                )))
            }
        }
    }
}

/// Whether one entry of a `rooms` claim allows `room`.
fn allows(entry: &str, room: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => entry == room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_policy_allows_every_room() {
        assert!(check_room(RoomPolicy::Open, None, "anything").is_ok());
    }

    #[test]
    fn the_token_policy_matches_exactly_or_by_a_starred_prefix() {
        let allowed = vec!["match-42".to_string(), "lobby.*".to_string()];
        let check = |room| check_room(RoomPolicy::Token, Some(&allowed), room);
        assert!(check("match-42").is_ok());
        assert!(check("match-420").is_err(), "no prefix without a star");
        assert!(check("lobby.eu").is_ok());
        assert!(check("lobby").is_err());
        let refused = check("match-43").unwrap_err();
        assert_eq!(refused.code, tern_core::proto::client::ErrorCode::Forbidden);
        assert!(
            check_room(RoomPolicy::Token, None, "lobby").is_err(),
            "no claim: no room"
        );
        assert!(check_room(RoomPolicy::Token, Some(&["*".to_string()]), "any").is_ok());
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [RoomPolicy::Open, RoomPolicy::Token] {
            assert_eq!(p.to_string().parse::<RoomPolicy>().unwrap(), p);
        }
        assert!("closed".parse::<RoomPolicy>().is_err());
    }
}
