//! What a valid send is, for a user's `Send` frame and for the back end's
//! `SendAsSystem` alike, and the checks the persister repeats on every
//! record (the log may hold records from older or foreign producers).

use tern_core::ids::{Conversation, clip};
use tern_core::proto::client::ErrorCode;

use crate::Refusal;

/// Longest client message id accepted.
pub const MAX_CLIENT_MSG_ID: usize = 128;
/// Longest content type accepted.
pub const MAX_CONTENT_TYPE: usize = 128;

/// Where a send goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The 1:1 conversation with this user.
    User(&'a str),
    /// An existing conversation id (`d:…` or `g:…`).
    Conversation(&'a str),
}

/// A send as it arrived, before any check.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    pub sender: &'a str,
    pub client_msg_id: &'a str,
    pub target: Option<Target<'a>>,
    pub content_type: &'a str,
    pub body_len: usize,
}

/// Checks a send's shape and returns its conversation. Group membership and
/// blocks need the store: the persister checks them ([`block_list_owner`], one
/// read per distinct pair of a batch), where the message is ordered.
pub fn check_send(req: &SendRequest<'_>, max_body_bytes: usize) -> Result<Conversation, Refusal> {
    let cmid = req.client_msg_id;
    if cmid.is_empty() || cmid.len() > MAX_CLIENT_MSG_ID {
        return Err(Refusal::invalid(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} bytes"
        )));
    }
    check_content(req.content_type, req.body_len, max_body_bytes)?;
    let conversation = match req.target {
        Some(Target::User(to)) => {
            Conversation::direct(req.sender, to).map_err(|e| Refusal::invalid(e.to_string()))?
        }
        Some(Target::Conversation(id)) => check_sender(req.sender, id)?,
        None => return Err(Refusal::invalid("send needs to_user or conversation")),
    };
    if conversation.has_direct_member(req.sender) == Some(false) {
        return Err(not_a_member(req.sender, &conversation));
    }
    Ok(conversation)
}

/// Checks what a message carries, chat message or room post alike: a
/// content type of at most [`MAX_CONTENT_TYPE`] bytes, a body within the
/// limit.
pub fn check_content(
    content_type: &str,
    body_len: usize,
    max_body_bytes: usize,
) -> Result<(), Refusal> {
    if content_type.len() > MAX_CONTENT_TYPE {
        return Err(Refusal::invalid(format!(
            "content_type is over the limit of {MAX_CONTENT_TYPE} bytes"
        )));
    }
    if body_len > max_body_bytes {
        return Err(Refusal::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message body of {body_len} bytes is over the limit of {max_body_bytes} bytes; nothing was stored"
            ),
        ));
    }
    Ok(())
}

/// Parses a conversation id a sender posts to: a 1:1 conversation must be
/// one of the sender's own.
pub fn check_sender(sender: &str, conversation: &str) -> Result<Conversation, Refusal> {
    let parsed = Conversation::parse(conversation)
        .map_err(|e| Refusal::new(ErrorCode::UnknownConversation, e.to_string()))?;
    if parsed.has_direct_member(sender) == Some(false) {
        return Err(not_a_member(sender, &parsed));
    }
    Ok(parsed)
}

fn not_a_member(sender: &str, conversation: &Conversation) -> Refusal {
    Refusal::forbidden(format!(
        "{} is not a member of conversation {conversation}",
        clip(sender)
    ))
}

/// Whose block list decides whether `sender` may post to `conversation`:
/// the other user of a 1:1 conversation. Group messages are not filtered
/// (blocking is about who may reach you directly, and who may add you to a
/// group: see [`crate::access`]); None for them and for notes to self.
pub fn block_list_owner<'a>(sender: &str, conversation: &'a Conversation) -> Option<&'a str> {
    let Conversation::Direct { low, high } = conversation else {
        return None;
    };
    let recipient = if low == sender { high } else { low };
    (recipient != sender).then_some(recipient.as_str())
}

/// The refusal of a message to a `recipient` who blocks its `sender`.
pub fn blocked(recipient: &str, sender: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Blocked,
        format!("{recipient} does not accept messages from {sender}; nothing was stored"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<'a>(target: Option<Target<'a>>) -> SendRequest<'a> {
        SendRequest {
            sender: "alice",
            client_msg_id: "c1",
            target,
            content_type: "text/plain",
            body_len: 10,
        }
    }

    fn code(r: Result<Conversation, Refusal>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn a_good_send_names_its_conversation() {
        let c = check_send(&send(Some(Target::User("bob"))), 100).unwrap();
        assert_eq!(c.to_string(), "d:alice:bob");
        let c = check_send(&send(Some(Target::Conversation("d:alice:bob"))), 100).unwrap();
        assert_eq!(c.to_string(), "d:alice:bob");
    }

    #[test]
    fn each_bad_part_gets_its_code() {
        let long_id = "x".repeat(MAX_CLIENT_MSG_ID + 1);
        let cases = [
            (
                SendRequest {
                    client_msg_id: "",
                    ..send(Some(Target::User("bob")))
                },
                ErrorCode::InvalidArgument,
            ),
            (
                SendRequest {
                    client_msg_id: &long_id,
                    ..send(Some(Target::User("bob")))
                },
                ErrorCode::InvalidArgument,
            ),
            (
                SendRequest {
                    body_len: 101,
                    ..send(Some(Target::User("bob")))
                },
                ErrorCode::MessageTooLarge,
            ),
            (send(None), ErrorCode::InvalidArgument),
            (send(Some(Target::User("b b"))), ErrorCode::InvalidArgument),
            (
                send(Some(Target::Conversation("x:nope"))),
                ErrorCode::UnknownConversation,
            ),
            (
                send(Some(Target::Conversation("d:bob:carol"))),
                ErrorCode::Forbidden,
            ),
        ];
        for (req, expected) in cases {
            assert_eq!(code(check_send(&req, 100)), expected, "{req:?}");
        }
    }

    #[test]
    fn a_huge_target_is_not_echoed() {
        let huge = "y".repeat(100_000);
        let r = check_send(&send(Some(Target::Conversation(&huge))), 100).unwrap_err();
        assert!(r.message.len() < 200, "{}", r.message.len());
    }

    #[test]
    fn only_1_1_messages_are_checked_against_the_recipients_blocks() {
        let direct = Conversation::direct("alice", "bob").unwrap();
        assert_eq!(block_list_owner("alice", &direct), Some("bob"));
        assert_eq!(block_list_owner("bob", &direct), Some("alice"));
        let to_self = Conversation::direct("alice", "alice").unwrap();
        assert_eq!(block_list_owner("alice", &to_self), None, "a note to self");
        let group = Conversation::group("g1").unwrap();
        assert_eq!(
            block_list_owner("alice", &group),
            None,
            "groups are not filtered"
        );
        let refusal = blocked("bob", "alice");
        assert_eq!(refusal.code, ErrorCode::Blocked);
        assert!(refusal.message.contains("nothing was stored"));
    }
}
