//! Every gRPC method of every service, called with each credential it must
//! refuse and with the one it must accept: the user API with bad tokens, as
//! another user and as alice; the back-end API and the user API each on the
//! other's listener; the archive administration with everything but the
//! admin token. It also checks that the descriptors name no service this
//! test has no table for.

use std::collections::BTreeSet;

use tern_core::auth::{TokenAuthority, TokenSpec};
use tern_proto::api::archive_admin_client::ArchiveAdminClient;
use tern_proto::api::backend_api_client::BackendApiClient;
use tern_proto::api::user_api_client::UserApiClient;
use tonic::Code;

use crate::archive_admin::archive_call;
use crate::backend_api::backend_call;
use crate::setup::{ADMIN, channel, descriptors, fixture, methods, revoked_token, server, token};
use crate::user_api::{as_another_user, user_call};

#[tokio::test]
async fn every_rpc_refuses_callers_it_must_refuse() {
    let server = server().await;
    let fx = fixture(&server).await;
    let (api, backend_addr) = (server.api(), server.backend_addr());
    let user_api = UserApiClient::new(channel(&api).await);
    let backend_api = BackendApiClient::new(channel(&backend_addr).await);
    let archive_api = ArchiveAdminClient::new(channel(&backend_addr).await);

    let services: BTreeSet<String> = descriptors()
        .file
        .iter()
        .filter(|f| f.package() == "tern.api.v1")
        .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["ArchiveAdmin".into(), "BackendApi".into(), "UserApi".into()]),
        "a new service needs its own table here"
    );

    let other_key = TokenAuthority::new("some-other-key-0123456789abcdef-xyz")
        .issue(&TokenSpec::new("alice", 3600), tern_core::now_ms());
    let expired = token("alice", 7_200_000, 3600);
    let revoked = revoked_token(&server, "rita").await;
    let alice = token("alice", 0, 3600);
    let mallory = token("mallory", 0, 3600);
    let backend_token = ternd::TEST_BACKEND_TOKEN;

    // The user API: a valid login token of the user the call is about, or nothing.
    let bad_user_credentials: [(&str, Option<&str>); 5] = [
        ("no credential", None),
        ("another key", Some(&other_key)),
        ("expired", Some(&expired)),
        ("revoked", Some(&revoked)),
        ("the back-end token", Some(backend_token)),
    ];
    for method in methods("UserApi") {
        for (what, credential) in &bad_user_credentials {
            let got = user_call(&user_api, &method, *credential, &fx).await;
            if method == "IssueDevToken" {
                // Outside dev mode it is not there: refused by the gate
                // (no valid signature) or as unimplemented (past it).
                assert!(
                    matches!(got, Code::Unauthenticated | Code::Unimplemented),
                    "UserApi.{method} with {what}: {got:?}"
                );
            } else {
                assert_eq!(got, Code::Unauthenticated, "UserApi.{method} with {what}");
            }
        }
        let got = user_call(&user_api, &method, Some(&mallory), &fx).await;
        assert_eq!(
            got,
            as_another_user(&method),
            "UserApi.{method} as another user"
        );
    }
    // The same calls as alice herself succeed: the refusals above are not
    // a broken server refusing everyone.
    for method in methods("UserApi") {
        let expected = if method == "IssueDevToken" {
            Code::Unimplemented
        } else {
            Code::Ok
        };
        let got = user_call(&user_api, &method, Some(&alice), &fx).await;
        assert_eq!(got, expected, "UserApi.{method} as alice");
    }

    // The back-end API: the back-end token only.
    let bad_backend_credentials: [(&str, Option<&str>, Code); 5] = [
        ("no credential", None, Code::Unauthenticated),
        (
            "a wrong back-end token",
            Some("wrong-backend-token-0123456789abcdef"),
            Code::Unauthenticated,
        ),
        ("a user's token", Some(&alice), Code::PermissionDenied),
        (
            "an expired user token",
            Some(&expired),
            Code::Unauthenticated,
        ),
        ("the admin token", Some(ADMIN), Code::Unauthenticated),
    ];
    for method in methods("BackendApi") {
        for (what, credential, expected) in &bad_backend_credentials {
            let got = backend_call(&backend_api, &method, *credential, &fx).await;
            assert_eq!(got, *expected, "BackendApi.{method} with {what}");
        }
        let got = backend_call(&backend_api, &method, Some(backend_token), &fx).await;
        assert_eq!(got, Code::Ok, "BackendApi.{method} with the back-end token");
        // Not served on the public listener at all: the back-end token is
        // no credential there, and past the gate the method is not there.
        let on_user_listener = BackendApiClient::new(channel(&api).await);
        let got = backend_call(&on_user_listener, &method, Some(backend_token), &fx).await;
        assert_eq!(
            got,
            Code::Unauthenticated,
            "BackendApi.{method} on api_listen"
        );
        let got = backend_call(&on_user_listener, &method, Some(&alice), &fx).await;
        assert_eq!(
            got,
            Code::Unimplemented,
            "BackendApi.{method} on api_listen as alice"
        );
    }
    for method in methods("UserApi") {
        let on_backend_listener = UserApiClient::new(channel(&backend_addr).await);
        let got = user_call(&on_backend_listener, &method, Some(&alice), &fx).await;
        assert_eq!(
            got,
            Code::PermissionDenied,
            "UserApi.{method} on backend_listen"
        );
        let got = user_call(&on_backend_listener, &method, Some(backend_token), &fx).await;
        assert_eq!(
            got,
            Code::Unimplemented,
            "UserApi.{method} on backend_listen, back-end token"
        );
    }

    // The archive: the admin token only.
    let bad_admin_credentials: [(&str, Option<&str>, Code); 4] = [
        ("no credential", None, Code::Unauthenticated),
        ("a user's token", Some(&alice), Code::PermissionDenied),
        (
            "the back-end token",
            Some(backend_token),
            Code::Unauthenticated,
        ),
        (
            "an expired user token",
            Some(&expired),
            Code::Unauthenticated,
        ),
    ];
    for method in methods("ArchiveAdmin") {
        for (what, credential, expected) in &bad_admin_credentials {
            let got = archive_call(&archive_api, &method, *credential).await;
            assert_eq!(got, *expected, "ArchiveAdmin.{method} with {what}");
        }
        let got = archive_call(&archive_api, &method, Some(ADMIN)).await;
        assert_eq!(got, Code::Ok, "ArchiveAdmin.{method} with the admin token");
    }
}
