//! The gateway's HTTP/1 server: accepts connections and serves each with hyper. The four proxy
//! routes (`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
//! `/v1/deployments/{name}/predict`) go straight to the request handler with hyper's own body;
//! everything else (`/v1/models`, `/metrics`, 404 and 405 answers) goes through the axum router
//! of [`Gateway::router`]. The proxy routes skip the router's matching, the boxing of the body
//! and the extractors: at tens of thousands of requests a second on two cores that is a
//! measurable share of the gateway's own CPU.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::Gateway;
use crate::proxy::Op;

/// One connection's service.
#[derive(Clone)]
struct GatewayService {
    gw: Gateway,
    router: Router,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The proxy route of `method` `path`, with the deployment name of `predict`. A predict name
/// with a `%` goes through the router, which percent-decodes it.
fn proxy_route<'a>(method: &Method, path: &'a str) -> Option<(Op, Option<&'a str>)> {
    if method != Method::POST {
        return None;
    }
    match path {
        "/v1/chat/completions" => Some((Op::Chat, None)),
        "/v1/completions" => Some((Op::Completions, None)),
        "/v1/embeddings" => Some((Op::Embeddings, None)),
        _ => {
            let name = path
                .strip_prefix("/v1/deployments/")?
                .strip_suffix("/predict")?;
            (!name.is_empty() && !name.contains(['/', '%'])).then_some((Op::Predict, Some(name)))
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for GatewayService {
    type Response = Response;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> ServiceFuture {
        match proxy_route(req.method(), req.uri().path()) {
            Some((op, name)) => {
                let gw = self.gw.clone();
                let name = name.map(str::to_owned);
                Box::pin(async move {
                    let (parts, body) = req.into_parts();
                    Ok(gw.handle(op, name, parts.headers, body).await)
                })
            }
            None => {
                let router = self.router.clone();
                Box::pin(async move { router.oneshot(req.map(Body::new)).await })
            }
        }
    }
}

/// Whether an accept error concerns that one connection only (the listener goes on at once).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves `gateway` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// open connection finish the request it is serving (idle ones close at once) and returns once
/// all are closed. Connection tasks are spawned on the current runtime.
pub(crate) async fn serve_listener(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let service = GatewayService {
        router: gateway.router(),
        gw: gateway,
    };
    // Connections hold a receiver each: the sender sees when the last one is gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::error!(error = %e, "gateway: cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(tcp, service.clone(), stop_rx.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Serves one connection; on shutdown, finishes the request in progress and closes it.
async fn serve_connection(
    tcp: TcpStream,
    service: GatewayService,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "gateway connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Stopping (or the server gone): finish the request in progress, then close.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
