//! `/api/v2/assets/{uid}/export-settings/`: saved export options of a form, and the
//! synchronous `data.csv` / `data.xlsx` files at their stable URLs (what Excel and Power BI
//! connections to KoboToolbox point at).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use fieldvault_store::KoboExportSettingRow;
use serde::Deserialize;
use serde_json::{Value, json};

use super::assets::datetime;
use super::exports::file_response;
use super::{BaseUrl, KoboError, page, strip_format};
use crate::App;
use crate::api::json::AppJson;
use crate::extract::AuthUser;
use crate::service::kobo_export::{self, Kind};

#[derive(Deserialize)]
pub struct P {
    uid: String,
    es: Option<String>,
}

fn setting_json(base: &str, asset_uid: &str, r: &KoboExportSettingRow) -> Value {
    let url = format!(
        "{base}/api/v2/assets/{asset_uid}/export-settings/{}/",
        r.uid
    );
    let settings: Value = serde_json::from_str(&r.settings).unwrap_or_else(|_| json!({}));
    json!({
        "uid": r.uid,
        "url": url,
        "name": r.name,
        "data_url_csv": format!("{url}data.csv"),
        "data_url_xlsx": format!("{url}data.xlsx"),
        "date_modified": datetime(r.updated_at),
        "export_settings": settings,
    })
}

/// `GET /export-settings/`.
pub async fn list(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, KoboError> {
    let all = kobo_export::settings_list(&app, &who.actor, &p.uid).await?;
    let n = all.len();
    let results = all.iter().map(|r| setting_json(&base, &p.uid, r)).collect();
    Ok(Json(page(
        &format!("{base}/api/v2/assets/{}/export-settings/", p.uid),
        &q,
        n,
        0,
        n.max(1),
        results,
    )))
}

/// `POST /export-settings/`: `{name, export_settings}`.
pub async fn create(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<(StatusCode, Json<Value>), KoboError> {
    let r = kobo_export::settings_create(&app, &who.actor, &who.user, &p.uid, &body).await?;
    Ok((StatusCode::CREATED, Json(setting_json(&base, &p.uid, &r))))
}

/// `GET /export-settings/{es}/`.
pub async fn detail(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
) -> Result<Json<Value>, KoboError> {
    let es = strip_format(p.es.as_deref().unwrap_or_default())?;
    let r = kobo_export::setting(&app, &who.actor, &p.uid, es).await?;
    Ok(Json(setting_json(&base, &p.uid, &r)))
}

/// `PATCH /export-settings/{es}/`.
pub async fn update(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, KoboError> {
    let es = p.es.as_deref().unwrap_or_default();
    let r = kobo_export::settings_update(&app, &who.actor, &who.user, &p.uid, es, &body).await?;
    Ok(Json(setting_json(&base, &p.uid, &r)))
}

/// `DELETE /export-settings/{es}/`.
pub async fn remove(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<StatusCode, KoboError> {
    let es = p.es.as_deref().unwrap_or_default();
    kobo_export::settings_delete(&app, &who.actor, &who.user, &p.uid, es).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn data(app: App, who: AuthUser, p: P, kind: Kind) -> Result<Response, KoboError> {
    let es = p.es.as_deref().unwrap_or_default();
    let (name, kind, stream) =
        kobo_export::synchronous(&app, &who.actor, &who.user, &p.uid, es, kind).await?;
    Ok(file_response(&name, kind, stream))
}

/// `GET /export-settings/{es}/data.csv`.
pub async fn data_csv(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<Response, KoboError> {
    data(app, who, p, Kind::Csv).await
}

/// `GET /export-settings/{es}/data.xlsx`.
pub async fn data_xlsx(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<Response, KoboError> {
    data(app, who, p, Kind::Xlsx).await
}
