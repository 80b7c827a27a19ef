//! Scenarios every backend must pass, whatever engine is behind the trait.
//! Each backend's tests call these (embedded here; Kafka, ScyllaDB and Redis
//! from their own crates), so both implementations behave the same.
//! Every scenario uses fresh ids, so one server can serve many runs.

// Test code (built only for tests): a failed unwrap is a failed scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log;
mod routes;
mod store;

pub use log::{lag_scenario, log_scenarios};
pub use routes::route_scenarios;
pub use store::store_scenarios;

/// A short random suffix for names, so runs never collide.
pub fn fresh(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// `n` distinct free loopback ports for processes a test starts, held
/// together while picked. Taken below Linux's ephemeral range (32768 and
/// up): a port from there, once released, can become the source port of
/// some process's outgoing connection (to Kafka, say) before the server
/// meant for it binds, and that server then fails with "address in use".
pub fn free_ports(n: usize) -> Vec<u16> {
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let start = rand::random::<u16>() % SPAN;
    let mut held = Vec::with_capacity(n);
    for i in 0..SPAN {
        if held.len() == n {
            break;
        }
        let port = LOW + (start + i) % SPAN;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(
        held.len(),
        n,
        "{n} free ports between {LOW} and {}",
        LOW + SPAN
    );
    held.iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}
