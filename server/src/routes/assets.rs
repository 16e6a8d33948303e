//! `GET /static/{name}`: the viewer's embedded CSS, JS and icons.

use crate::error::ApiError;
use actix_web::{web, HttpResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/static/{name}", web::get().to(asset));
}

async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = viewer::assets::get(&name).ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(asset.bytes))
}
