//! The image endpoints: list, inspect, pull (of local images), load, save, tag, rm.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use weft_proto::v1 as pb;

use crate::engine::Engine;
use crate::error::{ApiError, ApiResult};
use crate::model;
use crate::reply::{self, Reply};
use crate::route::Query;

/// `GET /images/json`.
pub async fn list(engine: &Arc<Engine>, query: &Query) -> ApiResult<Reply> {
    if query.get("filters").is_some_and(|f| !f.is_empty() && f != "{}") {
        return Err(ApiError::unsupported("filters on the image list"));
    }
    let images = engine.agent().list_images(pb::Empty {}).await?.into_inner().images;
    let rows: Vec<_> = images.iter().map(model::image_summary).collect();
    Ok(reply::json(StatusCode::OK, &rows))
}

/// `GET /images/{name}/json`.
pub async fn inspect(engine: &Arc<Engine>, name: &str) -> ApiResult<Reply> {
    match engine.agent().inspect_image(pb::ImageRef { reference: name.into() }).await {
        Ok(r) => Ok(reply::json(StatusCode::OK, &model::image_inspect(&r.into_inner()))),
        Err(s) if s.code() == Code::NotFound => Err(ApiError::no_such_image(name)),
        Err(s) => Err(s.into()),
    }
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: weft has no registry client, so a pull
/// succeeds only for an image the host already has ("Image is up to date", as Docker says when
/// nothing is newer), which is what lets `docker run` go on after a 404 from create; any other
/// image is refused with what to do instead.
pub async fn pull(engine: &Arc<Engine>, query: &Query) -> ApiResult<Reply> {
    if query.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported(
            "docker import (POST /images/create?fromSrc): use `weft image import`",
        ));
    }
    let image = query.get("fromImage").unwrap_or("");
    if image.is_empty() {
        return Err(ApiError::bad("fromImage is required"));
    }
    let reference = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) if tag.starts_with("sha256:") => format!("{image}@{tag}"),
        Some(tag) => format!("{image}:{tag}"),
        None => image.to_string(),
    };
    match engine.agent().inspect_image(pb::ImageRef { reference: reference.clone() }).await {
        Ok(_) => {
            let (reply, tx) = reply::stream("application/json");
            let text = crate::error::with_tag(&reference);
            let line = serde_json::json!({"status": format!("Status: Image is up to date for {text}")});
            let _ = tx.send(bytes::Bytes::from(format!("{line}\n"))).await;
            Ok(reply)
        }
        Err(s) if s.code() == Code::NotFound => Err(ApiError::not_found(format!(
            "No such image: {}: weft has no registry client; bring images in with `docker load` or `weft image import`",
            crate::error::with_tag(&reference)
        ))),
        Err(s) => Err(s.into()),
    }
}

/// `POST /images/load`: the body (a docker-save or OCI layout tar, plain or gzipped) streamed
/// to weftd's import; the answer is Docker's JSON message stream naming what was loaded.
pub async fn load(engine: &Arc<Engine>, body: Incoming) -> ApiResult<Reply> {
    let (tx, rx) = mpsc::channel::<pb::ImportChunk>(16);
    let mut agent = engine.agent();
    let call = tokio::spawn(async move { agent.import_image(ReceiverStream::new(rx)).await });
    let read = reply::forward_body(body, tx, "the image archive", |data| pb::ImportChunk {
        name: String::new(),
        data,
    })
    .await;
    let answer = call.await.map_err(|e| ApiError::internal(format!("image load: {e}")))?;
    read?;
    let images = answer?.into_inner().images;
    let (reply, tx) = reply::stream("application/json");
    for image in &images {
        let lines: Vec<String> = if image.names.is_empty() {
            vec![format!("Loaded image ID: {}", model::image_id(&image.id))]
        } else {
            image.names.iter().map(|n| format!("Loaded image: {n}")).collect()
        };
        for line in lines {
            let message = serde_json::json!({"stream": format!("{line}\n")});
            let _ = tx.send(Bytes::from(format!("{message}\n"))).await;
        }
    }
    Ok(reply)
}

/// `GET /images/get?names=NAME` and `/images/{name}/get`: the image as a docker-save tar.
pub async fn save(engine: &Arc<Engine>, name: Option<&str>, query: &Query) -> ApiResult<Reply> {
    let names: Vec<&str> = match name {
        Some(n) => vec![n],
        None => query.all("names"),
    };
    let reference = match names.as_slice() {
        [one] => one.to_string(),
        [] => return Err(ApiError::bad("no image named: give names=IMAGE")),
        _ => {
            return Err(ApiError::unsupported(
                "saving several images into one archive: save them one by one",
            ));
        }
    };
    let request = pb::ExportRequest { reference: reference.clone(), format: "docker".into() };
    let mut stream = match engine.agent().export_image(request).await {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == Code::NotFound => return Err(ApiError::no_such_image(&reference)),
        Err(s) => return Err(s.into()),
    };
    // The first chunk decides between an error answer and a 200.
    let first = match stream.next().await {
        Some(Ok(chunk)) => chunk.data,
        Some(Err(s)) if s.code() == Code::NotFound => return Err(ApiError::no_such_image(&reference)),
        Some(Err(s)) => return Err(s.into()),
        None => Vec::new(),
    };
    let (reply, tx) = reply::stream("application/x-tar");
    tokio::spawn(async move {
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    if tx.send(Bytes::from(c.data)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Headers are gone: cutting the body short is how the client learns of it.
                    tracing::warn!(error = %e.message(), "docker API: image save failed midway");
                    return;
                }
            }
        }
    });
    Ok(reply)
}

/// `POST /images/{name}/tag?repo=R&tag=T`.
pub async fn tag(engine: &Arc<Engine>, name: &str, query: &Query) -> ApiResult<Reply> {
    let repo = query.get("repo").unwrap_or("");
    if repo.is_empty() {
        return Err(ApiError::bad("repository name (repo) is required"));
    }
    let target = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    match engine.agent().tag_image(pb::TagRequest { reference: name.into(), name: target }).await {
        Ok(_) => Ok(reply::empty(StatusCode::CREATED)),
        Err(s) if s.code() == Code::NotFound => Err(ApiError::no_such_image(name)),
        Err(s) => Err(s.into()),
    }
}

/// `DELETE /images/{name}`: weft removes the name (and the image with its last name).
pub async fn remove(engine: &Arc<Engine>, name: &str, query: &Query) -> ApiResult<Reply> {
    if query.flag("force", false) {
        return Err(ApiError::unsupported("docker rmi --force: remove the containers using the image first"));
    }
    let info = match engine.agent().inspect_image(pb::ImageRef { reference: name.into() }).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::NotFound => return Err(ApiError::no_such_image(name)),
        Err(s) => return Err(s.into()),
    };
    engine.agent().remove_image(pb::ImageRef { reference: name.into() }).await?;
    let mut answer = vec![serde_json::json!({"Untagged": crate::error::with_tag(name)})];
    if info.names.len() <= 1 {
        answer.push(serde_json::json!({"Deleted": model::image_id(&info.id)}));
    }
    Ok(reply::json(StatusCode::OK, &answer))
}
