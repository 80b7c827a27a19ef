//! A session's beginning and end: the login (token, limits, registration
//! in the hub, the route, the user's groups, the cursor, the first push),
//! route renewals on heartbeats, and the cleanup once it closes.

use std::sync::Arc;
use std::time::Duration;

use tern_chat::Refusal;
use tern_core::ids::check_device;
use tern_core::now_ms;
use tern_core::proto::client::{ErrorCode, Limits, Login, LoginResult, server_frame};
use tern_core::routes::Route;

use crate::metrics;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Close, LoggedIn, Session, fatal};
use crate::hub::{ConnHandle, Kick};

/// A login a backend could not serve: the client retries; the cause is
/// logged, not sent (it names internal hosts).
fn cannot_log_in(e: impl std::fmt::Display) -> Close {
    tracing::warn!(error = %e, "login failed on a backend");
    fatal(
        ErrorCode::Unavailable,
        "cannot log in now: a backend is unavailable; try again",
    )
}

impl Session {
    pub(super) async fn on_login(&mut self, login: Login) -> Result<(), Close> {
        if self.login.is_some() {
            return self.reject(
                ErrorCode::InvalidArgument,
                "already logged in on this connection",
                "",
                0,
            );
        }
        let deps = &self.shared.deps;
        check_device(&login.device_id)
            .map_err(|e| fatal(ErrorCode::InvalidArgument, e.to_string()))?;
        let now = now_ms();
        let refused = |r: Refusal| Close::Fatal(r.code, r.message);
        let claims =
            tern_chat::identity::verify(&deps.auth, &login.token, Some(&login.device_id), now)
                .map_err(refused)?;
        // Before the old connection of this device is replaced: a revoked
        // token must not kick anyone out.
        tern_chat::identity::check_not_revoked(
            deps.store.as_ref(),
            &claims,
            Some(&login.device_id),
        )
        .await
        .map_err(refused)?;
        let token_issued_at_ms = claims.issued_at_ms();
        // The connection ends when its token does (a revocation it missed
        // cannot outlive the token).
        self.token_expires =
            Some(Instant::now() + Duration::from_millis((claims.exp * 1000).saturating_sub(now)));
        let user = claims.sub;
        let device = login.device_id;
        let codec = tern_wire::negotiate(&login.accept_codecs);
        let limits = &self.shared.limits;
        // A device logging in again replaces its old connection: it does
        // not need a place of its own.
        let replacing = !login.send_only && self.shared.hub.has_device(&user, &device);
        let max = match limits.config.connections_per_user {
            _ if replacing => 0,
            max => max,
        };
        self._user_place = Some(limits.per_user.try_acquire(&user, max).ok_or_else(|| {
            metrics::GATEWAY_LIMITED.inc("connections_per_user");
            fatal(
                ErrorCode::TooManyConnections,
                format!(
                    "{user} has {max} connections on this gateway, the most allowed: close one"
                ),
            )
        })?);
        self.budget.lift();

        let (mailbox_tx, mailbox) = mpsc::channel(self.shared.config.mailbox);
        let (kick_tx, kick) = watch::channel(None);
        let handle = ConnHandle {
            user: user.clone(),
            device: device.clone(),
            codec,
            token_issued_at_ms,
            mailbox: mailbox_tx,
            kick: kick_tx,
        };
        if let Some(old) = self.shared.hub.insert(self.id, handle, !login.send_only) {
            old.kick.send_replace(Some(Kick::Replaced));
        }
        self.mailbox = Some(mailbox);
        self.kick = Some(kick);
        let logged_in = Arc::new(LoggedIn {
            user: user.clone(),
            device: device.clone(),
            codec,
            send_only: login.send_only,
            rooms: claims.rooms,
        });
        self.login = Some(logged_in.clone());
        tracing::info!(%user, %device, send_only = login.send_only, "logged in");
        metrics::LOGINS.inc();

        // The route first, then the cursor and inbox: whatever is appended
        // after our read is pushed to us live (see the module docs).
        if !login.send_only {
            let route = Route {
                user: user.clone(),
                device: device.clone(),
                gateway: self.shared.config.node_id.clone(),
            };
            deps.routes
                .register(&route, self.shared.config.route_ttl)
                .await
                .map_err(cannot_log_in)?;
        }
        if !login.send_only {
            // Large groups are pushed to the members online here (see
            // `crate::groups`): this gateway learns the user's groups now.
            let groups = deps.store.user_groups(&user).await.map_err(cannot_log_in)?;
            self.shared.groups.online(&user, groups);
            self.in_group_members = true;
        }
        let cursor = deps
            .store
            .cursor(&user, &device)
            .await
            .map_err(cannot_log_in)?;
        let c = &self.shared.config;
        let result = LoginResult {
            user_id: user,
            device_id: device,
            codec: codec as i32,
            heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u32,
            max_body_bytes: c.max_body_bytes as u32,
            cursor,
            server_time_ms: now_ms(),
            login_push_max: c.login_push_max as u32,
            login_push_per_conversation: c.login_push_per_conversation as u32,
            limits: Some(Limits {
                max_frame_bytes: c.max_frame_bytes as u32,
                max_sends_in_flight: c.max_sends_in_flight as u32,
                sends_per_second: c.limits.sends.per_second as u32,
                send_burst: c.limits.sends.burst as u32,
                frames_per_second: c.limits.frames.per_second as u32,
                max_page_messages: tern_chat::pages::MAX_PAGE as u32,
            }),
        };
        self.emit(server_frame::Kind::LoginResult(result))?;
        if !login.send_only {
            self.login_push(&logged_in, cursor).await?;
        }
        Ok(())
    }

    pub(super) async fn renew_route(&mut self) {
        let Some(l) = self.login.as_ref().filter(|l| !l.send_only) else {
            return;
        };
        let route = Route {
            user: l.user.clone(),
            device: l.device.clone(),
            gateway: self.shared.config.node_id.clone(),
        };
        match self
            .shared
            .deps
            .routes
            .register(&route, self.shared.config.route_ttl)
            .await
        {
            // The route had gone (a directory restart, an expiry): pushes
            // for this device went nowhere meanwhile, but the inbox has
            // them. Catch up at the next timer tick.
            Ok(true) => {
                tracing::info!("route was missing; catching up from the inbox");
                self.pushes.catch_up_now(Instant::now());
            }
            Ok(false) => {}
            // The inbox still has everything; the next heartbeat tries again.
            Err(e) => tracing::warn!(error = %e, "route renewal failed"),
        }
    }

    /// Forgets the connection; removes the route unless the device already
    /// logged in again elsewhere on this gateway.
    pub(super) async fn cleanup(&mut self) {
        self.leave_room();
        let Some(login) = self.login.take() else {
            return;
        };
        if std::mem::take(&mut self.in_group_members) {
            self.shared.groups.offline(&login.user);
        }
        let current = self.shared.hub.remove(self.id);
        if current && !login.send_only {
            let route = Route {
                user: login.user.clone(),
                device: login.device.clone(),
                gateway: self.shared.config.node_id.clone(),
            };
            if let Err(e) = self.shared.deps.routes.unregister(&route).await {
                tracing::warn!(error = %e, "route not removed; it expires with its TTL");
            }
        }
    }
}
