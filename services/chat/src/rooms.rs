//! Who may join and post to which live room.
//!
//! `open`: any logged-in user, any room (public chat, a live stream's
//! comments). `token`: only rooms the login token lists in its `rooms`
//! claim, as id prefixes (`"match-42"` allows exactly that room and
//! `match-42…`; `""` allows every room), so the application's auth server
//! decides who watches what when it signs the token.

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
            let ok = allowed
                .is_some_and(|prefixes| prefixes.iter().any(|p| room.starts_with(p.as_str())));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_policy_allows_every_room() {
        assert!(check_room(RoomPolicy::Open, None, "anything").is_ok());
    }

    #[test]
    fn the_token_policy_matches_prefixes() {
        let allowed = vec!["match-42".to_string(), "lobby".to_string()];
        let check = |room| check_room(RoomPolicy::Token, Some(&allowed), room);
        assert!(check("match-42").is_ok());
        assert!(check("match-42.replay").is_ok());
        assert!(check("lobby").is_ok());
        let refused = check("match-43").unwrap_err();
        assert_eq!(refused.code, tern_core::proto::client::ErrorCode::Forbidden);
        assert!(
            check_room(RoomPolicy::Token, None, "lobby").is_err(),
            "no claim: no room"
        );
        assert!(check_room(RoomPolicy::Token, Some(&[String::new()]), "any").is_ok());
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [RoomPolicy::Open, RoomPolicy::Token] {
            assert_eq!(p.to_string().parse::<RoomPolicy>().unwrap(), p);
        }
        assert!("closed".parse::<RoomPolicy>().is_err());
    }
}
