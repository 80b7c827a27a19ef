//! The gRPC APIs as the client sees them: the user API (every call with a
//! login token), dev tokens, and a connection to the back-end API for
//! tools and tests that hold the back-end token.

use tern_proto::api::IssueDevTokenRequest;
use tern_proto::api::backend_api_client::BackendApiClient;
use tern_proto::api::user_api_client::UserApiClient;
use tonic::transport::Endpoint;

use crate::ClientError;
use crate::client::DEFAULT_REQUEST_TIMEOUT;

/// Default address of the user API.
pub const DEFAULT_API_ADDR: &str = "http://127.0.0.1:7402";
/// Default address of the back-end API (and the archive administration).
pub const DEFAULT_BACKEND_ADDR: &str = "http://127.0.0.1:7404";

/// Asks the API at `api_addr` (`http://host:port`, or `host:port`) for a
/// token for `user`, with the server's default lifetime. Only a server in
/// dev mode issues them (otherwise `ClientError::Api` with `PermissionDenied`).
pub async fn dev_token(api_addr: &str, user: &str) -> Result<String, ClientError> {
    dev_token_with_ttl(api_addr, user, 0).await
}

/// [`dev_token`] with a lifetime in seconds (0: the server's default).
pub async fn dev_token_with_ttl(
    api_addr: &str,
    user: &str,
    ttl_seconds: u64,
) -> Result<String, ClientError> {
    dev_token_with(
        api_addr,
        IssueDevTokenRequest {
            user: user.to_string(),
            ttl_seconds,
            ..Default::default()
        },
    )
    .await
}

/// A dev token as `request` asks (bound to a device, allowing rooms).
pub async fn dev_token_with(
    api_addr: &str,
    request: IssueDevTokenRequest,
) -> Result<String, ClientError> {
    let mut api = connect_api(api_addr).await?;
    Ok(api.issue_dev_token(request).await?.into_inner().token)
}

/// A gRPC client for the user API at `api_addr`, with the default
/// timeouts. Its calls need [`with_token`].
pub async fn connect_api(
    api_addr: &str,
) -> Result<UserApiClient<tonic::transport::Channel>, ClientError> {
    Ok(UserApiClient::new(
        api_channel(api_addr, Some(DEFAULT_REQUEST_TIMEOUT)).await?,
    ))
}

/// A gRPC client for the back-end API at `addr`. Its calls need
/// [`with_token`] with the back-end token.
pub async fn connect_backend(
    addr: &str,
) -> Result<BackendApiClient<tonic::transport::Channel>, ClientError> {
    Ok(BackendApiClient::new(
        api_channel(addr, Some(DEFAULT_REQUEST_TIMEOUT)).await?,
    ))
}

/// Adds `authorization: Bearer <token>` to every call of a client.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Result<Self, ClientError> {
        format!("Bearer {token}")
            .parse()
            .map(Bearer)
            .map_err(|_| ClientError::Protocol("the token is not valid header text".into()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose every call carries a bearer token.
pub type Authorized =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// The user API at `api_addr`, every call made with the login `token`.
pub async fn connect_api_as(
    api_addr: &str,
    token: &str,
) -> Result<UserApiClient<Authorized>, ClientError> {
    let channel = api_channel(api_addr, Some(DEFAULT_REQUEST_TIMEOUT)).await?;
    Ok(UserApiClient::with_interceptor(
        channel,
        Bearer::new(token)?,
    ))
}

/// The back-end API at `addr`, every call made with the back-end `token`.
pub async fn connect_backend_as(
    addr: &str,
    token: &str,
) -> Result<BackendApiClient<Authorized>, ClientError> {
    let channel = api_channel(addr, Some(DEFAULT_REQUEST_TIMEOUT)).await?;
    Ok(BackendApiClient::with_interceptor(
        channel,
        Bearer::new(token)?,
    ))
}

/// `message` as a request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> Result<tonic::Request<T>, ClientError> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::Protocol("the token is not valid header text".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A connection to the API at `api_addr`; `timeout` bounds each call
/// (None: calls may stream for as long as they need, like an export).
pub(crate) async fn api_channel(
    api_addr: &str,
    timeout: Option<std::time::Duration>,
) -> Result<tonic::transport::Channel, ClientError> {
    let url = if api_addr.contains("://") {
        api_addr.to_string()
    } else {
        format!("http://{api_addr}")
    };
    let unreachable = |reason: String| ClientError::ApiUnreachable {
        addr: url.clone(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| unreachable(format!("not a valid URL ({e})")))?
        .connect_timeout(DEFAULT_REQUEST_TIMEOUT);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))
}

/// An error and its causes, joined: tonic's transport error alone just says
/// "transport error". Causes that repeat the previous one are left out.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, cause: Option<Layer>) -> Layer {
        Layer {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn error_chain_joins_causes_without_repeats() {
        let err = layer(
            "transport error",
            Some(layer(
                "tcp connect error",
                Some(layer("tcp connect error", Some(layer("refused", None)))),
            )),
        );
        assert_eq!(
            error_chain(&err),
            "transport error: tcp connect error: refused"
        );
    }

    #[tokio::test]
    async fn an_unreachable_api_is_reported_with_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = dev_token(&addr, "alice").await.unwrap_err();
        let ClientError::ApiUnreachable { addr: reported, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(reported, &format!("http://{addr}"));
    }
}
