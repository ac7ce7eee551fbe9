//! The image endpoints: list and inspect.

use std::sync::Arc;

use http::StatusCode;
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
