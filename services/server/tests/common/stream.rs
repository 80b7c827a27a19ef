//! Streams of messages between clients that reconnect like real apps: on a
//! closed connection, to the other gateway, with the cursor they stored.
//! For the tests that stop services mid-stream (SIGKILL, SIGTERM).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tern_client::{Client, Event, SendOptions, Target};
use tern_proto::client::{ErrorCode, Message};

use super::{WAIT, login_at};

/// Where a client (re)connects: the gateway Service sends a new connection
/// to a gateway that accepts it; here, the other one of the two.
#[derive(Clone)]
pub struct Lb {
    pub api: String,
    pub gateways: [String; 2],
}

impl Lb {
    pub async fn connect(&self, at: usize, user: &str, known_cursor: u64) -> Client {
        login_at(&self.api, &self.gateways[at], user, "phone", known_cursor).await
    }
}

/// Sends m0..m{n-1} to `to`, each with its own client_msg_id until
/// confirmed; when the gateway closes the connection, logs in on the other
/// one and sends the unconfirmed message again. Returns the reconnects.
pub async fn send_stream(lb: Lb, mut at: usize, user: String, to: String, n: usize) -> usize {
    let mut client = lb.connect(at, &user, 0).await;
    let mut reconnects = 0;
    for i in 0..n {
        let body = format!("m{i}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let send = SendOptions::new(Target::ToUser(to.clone()), body.clone())
                .with_client_msg_id(format!("{user}-{i}"));
            match client.send(send).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{body} never confirmed: {e}"
                    );
                    assert!(
                        e.code() != Some(ErrorCode::InvalidArgument),
                        "{body} refused: {e}"
                    );
                    if client.closed_reason().is_some() {
                        at = 1 - at;
                        client = lb.connect(at, &user, 0).await;
                        reconnects += 1;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    reconnects
}

pub struct Received {
    pub messages: Vec<Message>,
    pub repeats: usize,
    pub reconnects: usize,
    pub going_away: usize,
}

/// Receives until n distinct messages arrived (adding each new one to
/// `progress`, which several receivers may share), ACKing each push once the
/// app "stored" it; on a closed connection logs in on the other gateway,
/// saying which cursor it stored up to (as a real app does).
pub async fn receive_stream(
    lb: Lb,
    mut at: usize,
    user: String,
    n: usize,
    progress: Arc<AtomicUsize>,
) -> Received {
    let mut client = lb.connect(at, &user, 0).await;
    let mut r = Received {
        messages: Vec::new(),
        repeats: 0,
        reconnects: 0,
        going_away: 0,
    };
    let (mut ids, mut stored) = (HashSet::new(), 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids.len() < n {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("{user}: only {} of {n} messages arrived", ids.len()));
        match event {
            Some(Event::Messages {
                messages,
                last_cursor,
                ..
            }) => {
                let before = ids.len();
                for m in messages {
                    if ids.insert(m.message_id.clone()) {
                        r.messages.push(m);
                    } else {
                        r.repeats += 1;
                    }
                }
                stored = stored.max(last_cursor);
                progress.fetch_add(ids.len() - before, Ordering::Relaxed);
                // A failed ACK is re-sent by the next push's ACK, or made
                // moot by the cursor given at the next login.
                let _ = client.ack(last_cursor).await;
            }
            Some(Event::ServerError(e)) if e.code() == ErrorCode::GoingAway => r.going_away += 1,
            Some(Event::ServerError(e)) => panic!("{user}: server error {e:?}"),
            Some(Event::Closed { .. }) | None => {
                at = 1 - at;
                client = lb.connect(at, &user, stored).await;
                r.reconnects += 1;
            }
            Some(Event::RoomMessages { .. } | Event::GroupMessages { .. }) => {}
        }
    }
    r
}

/// Waits until `progress` moves on by 10 messages, and says how long that
/// took after `what` (for the note: a consumer that left its group cleanly
/// is replaced at once, not after the 10 s session timeout).
pub async fn report_resume(what: &str, progress: &AtomicUsize) {
    let (start, from) = (
        tokio::time::Instant::now(),
        progress.load(Ordering::Relaxed),
    );
    wait_for(progress, from + 10).await;
    eprintln!("{what}: messages flowed again {:?} later", start.elapsed());
}

pub async fn wait_for(progress: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while progress.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {}",
            progress.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn check_all_once_in_order(who: &str, r: &Received, n: usize) {
    assert_eq!(r.repeats, 0, "{who} was shown a message twice");
    let mut got: Vec<(usize, u64)> = r
        .messages
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.body)[1..].parse().expect("m<i>"),
                m.seq,
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "{who} got every message, none lost"
    );
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "{who}: seq follows send order"
    );
}
