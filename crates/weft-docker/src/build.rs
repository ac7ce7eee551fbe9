//! `POST /build`: the classic builder's endpoint (`DOCKER_BUILDKIT=0 docker build`). The body,
//! a tar of the context, is streamed to weftd's build; the answer is Docker's JSON message
//! stream (`Step N/M : ...`, `Successfully built`, `Successfully tagged`, or an error message).

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::v1 as pb;

use crate::engine::Engine;
use crate::error::{ApiError, ApiResult};
use crate::model;
use crate::reply::{self, Reply};
use crate::route::Query;

/// Query parameters weft maps; any other must be at its zero value.
const MAPPED: &[&str] =
    &["t", "dockerfile", "buildargs", "target", "nocache", "q", "rm", "forcerm", "version"];

/// A value the docker client sends for an option the user did not give.
fn is_default(value: &str) -> bool {
    matches!(value, "" | "0" | "false" | "{}" | "[]" | "null" | "default")
}

/// weft's build options from the query.
pub fn options(query: &Query) -> ApiResult<pb::BuildChunk> {
    for (key, value) in query.pairs() {
        if !MAPPED.contains(&key) && !is_default(value) {
            return Err(ApiError::unsupported(format!("the build option {key}={value}")));
        }
    }
    if query.get("version").is_some_and(|v| v == "2") {
        return Err(ApiError::unsupported("BuildKit (version=2): build with DOCKER_BUILDKIT=0"));
    }
    let build_args = match query.get("buildargs").filter(|a| !a.is_empty()) {
        None => Vec::new(),
        Some(text) => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).map_err(|e| ApiError::bad(format!("invalid buildargs: {e}")))?;
            map.into_iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect()
        }
    };
    Ok(pb::BuildChunk {
        tags: query.all("t").into_iter().filter(|t| !t.is_empty()).map(String::from).collect(),
        dockerfile: query.get("dockerfile").unwrap_or("").to_string(),
        build_args,
        target: query.get("target").unwrap_or("").to_string(),
        no_cache: query.flag("nocache", false),
        context: Vec::new(),
    })
}

fn message(key: &str, text: String) -> Bytes {
    Bytes::from(format!("{}\n", serde_json::json!({ key: text })))
}

/// `POST /build`.
pub async fn build(engine: &Arc<Engine>, query: &Query, body: Incoming) -> ApiResult<Reply> {
    let first = options(query)?;
    let tags = first.tags.clone();
    let quiet = query.flag("q", false);
    let (tx, rx) = mpsc::channel::<pb::BuildChunk>(16);
    let mut agent = engine.agent();
    let call = tokio::spawn(async move { agent.build_image(ReceiverStream::new(rx)).await });
    let _ = tx.send(first).await;
    let read = reply::forward_body(body, tx, "the build context", |context| pb::BuildChunk {
        context,
        ..Default::default()
    })
    .await;
    let answer = call.await.map_err(|e| ApiError::internal(format!("build: {e}")))?;
    read?;
    // Docker answers 200 and reports a failed build in the stream.
    let (reply, out) = reply::stream("application/json");
    match answer {
        Ok(response) => {
            let r = response.into_inner();
            let image = r.image.unwrap_or_default();
            if !quiet {
                let total = r.steps.len();
                for (i, step) in r.steps.iter().enumerate() {
                    let _ = out
                        .send(message("stream", format!("Step {}/{total} : {}\n", i + 1, step.text)))
                        .await;
                    if step.cached {
                        let _ = out.send(message("stream", " ---> Using cache\n".into())).await;
                    }
                }
            }
            let id = model::image_id(&image.id);
            let _ = out.send(Bytes::from(format!("{}\n", serde_json::json!({"aux": {"ID": id}})))).await;
            if !quiet {
                let short = id.trim_start_matches("sha256:").chars().take(12).collect::<String>();
                let _ = out.send(message("stream", format!("Successfully built {short}\n"))).await;
                for tag in &tags {
                    let _ = out
                        .send(message(
                            "stream",
                            format!("Successfully tagged {}\n", crate::error::with_tag(tag)),
                        ))
                        .await;
                }
            }
        }
        Err(status) => {
            let text = status.message().to_string();
            let line = serde_json::json!({"errorDetail": {"message": text}, "error": text});
            let _ = out.send(Bytes::from(format!("{line}\n"))).await;
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_docker_build_sends_is_mapped_and_the_rest_refused() {
        let q = Query::parse(Some(
            "t=app%3A1&t=app%3Alatest&dockerfile=Dockerfile&buildargs=%7B%22A%22%3A%221%22%7D&target=final&nocache=1&rm=1&forcerm=0&memory=0&cachefrom=%5B%5D&labels=%7B%7D&networkmode=default&version=1",
        ));
        let o = options(&q).unwrap();
        assert_eq!(o.tags, ["app:1", "app:latest"]);
        assert_eq!((o.build_args[0].as_str(), o.target.as_str(), o.no_cache), ("A=1", "final", true));
        let e = options(&Query::parse(Some("labels=%7B%22a%22%3A%22b%22%7D"))).unwrap_err();
        assert!(e.message.contains("labels"), "{}", e.message);
        assert!(options(&Query::parse(Some("version=2"))).unwrap_err().message.contains("BuildKit"));
    }
}
