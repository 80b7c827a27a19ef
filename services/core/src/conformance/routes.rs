//! The route directory scenarios.

// Test code (built only for tests): a failed unwrap is a failed scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::fresh;
use crate::routes::{Route, RouteDirectory};

pub async fn route_scenarios(routes: Arc<dyn RouteDirectory>) {
    let alice = fresh("alice");
    let bob = fresh("bob");
    let r = |user: &str, device: &str, gw: &str| Route {
        user: user.into(),
        device: device.into(),
        gateway: gw.into(),
    };
    let ttl = Duration::from_secs(30);
    assert!(
        routes
            .register(&r(&alice, "phone", "gw1"), ttl)
            .await
            .unwrap(),
        "a new route is reported missing"
    );
    assert!(
        !routes
            .register(&r(&alice, "phone", "gw1"), ttl)
            .await
            .unwrap(),
        "a renewal is not"
    );
    routes
        .register(&r(&alice, "laptop", "gw2"), ttl)
        .await
        .unwrap();
    routes
        .register(&r(&bob, "phone", "gw1"), ttl)
        .await
        .unwrap();
    let found = routes
        .lookup(&[alice.clone(), bob.clone(), fresh("nobody")])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    let mut gws: Vec<_> = found[&alice].iter().map(|r| r.gateway.clone()).collect();
    gws.sort();
    assert_eq!(gws, vec!["gw1", "gw2"]);

    // Unregistering from a gateway the device already left does nothing.
    routes
        .register(&r(&bob, "phone", "gw2"), ttl)
        .await
        .unwrap();
    routes.unregister(&r(&bob, "phone", "gw1")).await.unwrap();
    let found = routes.lookup(std::slice::from_ref(&bob)).await.unwrap();
    assert_eq!(found[&bob], vec![r(&bob, "phone", "gw2")]);
    routes.unregister(&r(&bob, "phone", "gw2")).await.unwrap();
    assert!(
        routes
            .lookup(std::slice::from_ref(&bob))
            .await
            .unwrap()
            .is_empty()
    );

    // A gateway that stops renewing its liveness is dead; sweeping removes
    // its routes and only its routes.
    let (gw_dead, gw_live) = (fresh("gwdead"), fresh("gwlive"));
    let carol = fresh("carol");
    routes
        .gateway_alive(&gw_dead, Duration::from_millis(1100))
        .await
        .unwrap();
    routes.gateway_alive(&gw_live, ttl).await.unwrap();
    routes
        .register(&r(&carol, "phone", &gw_dead), ttl)
        .await
        .unwrap();
    routes
        .register(&r(&carol, "laptop", &gw_live), ttl)
        .await
        .unwrap();
    assert!(!routes.dead_gateways().await.unwrap().contains(&gw_dead));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let dead = routes.dead_gateways().await.unwrap();
    assert!(dead.contains(&gw_dead), "{dead:?}");
    assert!(!dead.contains(&gw_live));
    let swept = crate::routes::sweep_dead_gateways(routes.as_ref())
        .await
        .unwrap();
    assert!(swept.contains(&gw_dead));
    let found = routes.lookup(std::slice::from_ref(&carol)).await.unwrap();
    assert_eq!(found[&carol], vec![r(&carol, "laptop", &gw_live)]);
    assert!(
        !routes.dead_gateways().await.unwrap().contains(&gw_dead),
        "a swept gateway is forgotten"
    );
    assert_eq!(routes.remove_gateway(&gw_live).await.unwrap(), 1);
    assert!(
        routes
            .lookup(std::slice::from_ref(&carol))
            .await
            .unwrap()
            .is_empty()
    );

    // Room viewers: summed over gateways; a report of 0 withdraws one.
    let (room_a, room_b, gw_a, gw_b) = (fresh("room"), fresh("room"), fresh("gw"), fresh("gw"));
    routes
        .report_room_viewers(&gw_a, &[(room_a.clone(), 3), (room_b.clone(), 1)], ttl)
        .await
        .unwrap();
    routes
        .report_room_viewers(&gw_b, &[(room_a.clone(), 4)], Duration::from_millis(1100))
        .await
        .unwrap();
    let rooms = [room_a.clone(), room_b.clone(), fresh("empty")];
    let viewers = routes.room_viewers(&rooms).await.unwrap();
    assert_eq!(viewers.len(), 2, "{viewers:?}");
    assert_eq!((viewers[&room_a], viewers[&room_b]), (7, 1));
    routes
        .report_room_viewers(&gw_a, &[(room_b.clone(), 0)], ttl)
        .await
        .unwrap();
    assert!(
        !routes
            .room_viewers(&rooms)
            .await
            .unwrap()
            .contains_key(&room_b)
    );

    // Routes expire when not renewed.
    routes
        .register(&r(&bob, "tablet", "gw1"), Duration::from_millis(1100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        routes
            .lookup(std::slice::from_ref(&bob))
            .await
            .unwrap()
            .is_empty(),
        "expired route still listed"
    );
    assert_eq!(
        routes.room_viewers(&rooms).await.unwrap()[&room_a],
        3,
        "a lapsed report no longer counts"
    );
    assert!(
        routes
            .register(&r(&bob, "tablet", "gw1"), ttl)
            .await
            .unwrap(),
        "renewing an expired route reports it missing: the device may have missed pushes"
    );
    assert!(
        routes
            .register(&r(&bob, "tablet", "gw2"), ttl)
            .await
            .unwrap(),
        "a route that pointed at another gateway was missing here"
    );
}
