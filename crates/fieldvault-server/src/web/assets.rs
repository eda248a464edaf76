//! The console's static files, embedded in the binary and served under content-hashed names with a
//! year-long immutable cache (a new build with a changed file gets a new name). Nothing comes from
//! another origin.

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub struct Asset {
    /// The name it is served under: `console.<hash>.<ext>`.
    pub name: String,
    body: &'static [u8],
    content_type: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, body: &'static [u8], content_type: &'static str) -> Self {
        let hash = fieldvault_crypto::random::to_hex(&fieldvault_crypto::mac::sha256(body));
        let short = hash.get(..12).unwrap_or(&hash);
        Self {
            name: format!("{stem}.{short}.{ext}"),
            body,
            content_type,
        }
    }

    /// The URL path of the file.
    pub fn path(&self) -> String {
        format!("/console/assets/{}", self.name)
    }
}

/// The style sheet.
pub static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "css",
        include_bytes!("assets/console.css"),
        "text/css; charset=utf-8",
    )
});

/// The script (plain JavaScript, no framework, no build step).
pub static JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "js",
        include_bytes!("assets/console.js"),
        "text/javascript; charset=utf-8",
    )
});

/// `GET /console/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = [&*CSS, &*JS].into_iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut resp = Response::new(Body::from(asset.body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}
