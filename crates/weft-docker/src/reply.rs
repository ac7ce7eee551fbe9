//! Responses: the body type every handler returns, JSON and empty answers, streams whose
//! headers go out at once (wait, logs), and the headers moby puts on every answer.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::route::{MAX_VERSION, version_text};

/// The body of every answer.
pub type Body = BoxBody<Bytes, Infallible>;

/// An answer.
pub type Reply = Response<Body>;

/// Docker's content type for a container's output without a TTY.
pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";

/// Docker's content type for output on a TTY (raw bytes, no frames).
pub const RAW: &str = "application/vnd.docker.raw-stream";

/// `value` as JSON with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut reply = Response::new(Full::new(Bytes::from(body)).boxed());
    *reply.status_mut() = status;
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// `status` with no body (204 No Content, 304 Not Modified).
pub fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()).boxed());
    *reply.status_mut() = status;
    reply
}

/// Plain text.
pub fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *reply.status_mut() = status;
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    reply
}

/// An error as Docker answers it.
pub fn error(e: &ApiError) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(e.body())).boxed());
    *reply.status_mut() = e.status;
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// A 200 whose headers go out now and whose body is what is sent on the returned channel, until
/// it is dropped: the shape of `wait` (the client starts the container after the headers) and of
/// `logs --follow`.
pub fn stream(content_type: &'static str) -> (Reply, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut reply = Response::new(BodyExt::boxed(body));
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (reply, tx)
}

/// Forwards a request body to `tx` frame by frame (each made into a message by `chunk`) until
/// the body ends or the receiver is gone, then closes `tx`: the uploads of `load` and `build`,
/// streamed to weftd without holding them in memory. A body that cannot be read is a 400 naming
/// `what`.
pub async fn forward_body<T>(
    mut body: hyper::body::Incoming,
    tx: mpsc::Sender<T>,
    what: &str,
    chunk: impl Fn(Vec<u8>) -> T,
) -> Result<(), ApiError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("reading {what}: {e}")))?;
        if let Ok(data) = frame.into_data()
            && tx.send(chunk(data.to_vec())).await.is_err()
        {
            break;
        }
    }
    Ok(())
}

/// The headers moby sets on every answer, so clients negotiate and identify the server.
pub fn decorate(reply: &mut Reply) {
    let h = reply.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&version_text(MAX_VERSION)) {
        h.insert("Api-Version", v);
    }
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(header::SERVER, HeaderValue::from_static("Docker/weft (linux)"));
}
