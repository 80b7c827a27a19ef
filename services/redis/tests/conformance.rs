//! The route-directory conformance scenarios against a real Redis.
//!
//! Needs Redis at `TERN_TEST_REDIS` (e.g. `redis://127.0.0.1:6379/`), as
//! `infra/up` starts it and `make test` sets it. Without the variable the
//! test says so and passes: `cargo test` alone needs no servers. With it set
//! and Redis down, the test fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tern_redis::{RedisRoutes, RedisRoutesConfig};

#[tokio::test]
async fn redis_routes_conform() {
    let Ok(url) = std::env::var("TERN_TEST_REDIS") else {
        eprintln!(
            "TERN_TEST_REDIS not set: skipping the Redis conformance run (make test sets it)"
        );
        return;
    };
    let routes = RedisRoutes::connect(&RedisRoutesConfig::new(url))
        .await
        .expect("Redis reachable");
    tern_core::conformance::route_scenarios(Arc::new(routes)).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let mut config = RedisRoutesConfig::new("redis://127.0.0.1:1/");
    config.timeout = std::time::Duration::from_millis(500);
    let err = RedisRoutes::connect(&config)
        .await
        .err()
        .expect("port 1 has no Redis");
    assert!(
        err.to_string().contains("Redis at redis://127.0.0.1:1/"),
        "{err}"
    );
}
