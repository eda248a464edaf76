//! `/api/v2/assets/` list and detail, and `/content/` (specs/kobo-api-v2.md §1).

use axum::Json;
use axum::extract::{Path, Query, State};
use fieldvault_core::Verb;
use serde_json::{Value, json};

use super::{BaseUrl, KoboError, check_format, page, strip_format};
use crate::App;
use crate::extract::AuthUser;
use crate::service::kobo::{self, Asset};

/// Model datetimes: ISO-8601 UTC with microseconds and `Z`.
pub fn datetime(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_micros(t).to_string()
}

/// A version uid (`v…`) for a form definition.
pub fn version_uid(def_id: i64) -> String {
    let d = fieldvault_crypto::mac::sha256(format!("fieldvault/kobo-version/{def_id}").as_bytes());
    let mut s = String::from("v");
    for b in &d[..21] {
        s.push(char::from(
            kobo::UID_ALPHABET[usize::from(*b) % kobo::UID_ALPHABET.len()],
        ));
    }
    s
}

async fn list_json(app: &App, base: &str, a: &Asset) -> Result<Value, KoboError> {
    let url = format!("{base}/api/v2/assets/{}/", a.uid);
    let owner = match a.project.created_by {
        Some(id) => app
            .store
            .user_by_id(fieldvault_core::UserId(id))
            .await?
            .map(|u| u.username),
        None => None,
    };
    let can_read = a.may(Verb::SubmissionRead);
    let (count, last) = if can_read {
        kobo::stats(app, a).await?
    } else {
        (0, None)
    };
    let schema = a.schema().ok();
    let languages = schema
        .as_ref()
        .map(super::content::languages)
        .unwrap_or_default();
    let deployed = a.deployed();
    let active = deployed && a.form.state != "closed";
    let status = if !deployed {
        "draft"
    } else if active {
        "deployed"
    } else {
        "archived"
    };
    let name = a
        .def
        .title
        .clone()
        .unwrap_or_else(|| a.form.xml_form_id.clone());
    Ok(json!({
        "url": url,
        "date_created": datetime(a.form.created_at),
        "date_modified": datetime(a.form.updated_at.unwrap_or(a.form.created_at)),
        "date_deployed": a.def.published_at.map(datetime),
        "owner": owner.as_ref().map(|o| format!("{base}/api/v2/users/{o}/")),
        "owner__username": owner,
        "owner_label": owner,
        "summary": {
            "geo": false,
            "languages": languages,
            "row_count": schema.as_ref().map(|s| s.fields().len()).unwrap_or(0),
            "default_translation": languages.first(),
            "lock_all": false,
            "lock_any": false,
        },
        "parent": null,
        "uid": a.uid,
        "tag_string": "",
        "settings": {"description": a.project.description.clone().unwrap_or_default()},
        "kind": "asset",
        "name": name,
        "asset_type": "survey",
        "version_id": version_uid(a.def.id),
        "has_deployment": deployed,
        "deployed_version_id": a.form.published_def_id.map(version_uid),
        "deployment__active": active,
        "deployment__submission_count": if can_read { json!(count) } else { Value::Null },
        "deployment__last_submission_time": last.map(datetime),
        "deployment__encrypted": a.encrypted(),
        "deployment__uuid": null,
        "deployment_status": status,
        "permissions": [],
        "export_settings": [],
        "downloads": [],
        "data": format!("{url}data/"),
        "subscribers_count": 0,
        "status": "private",
        "access_types": null,
        "children": {"count": 0},
        "data_sharing": {},
        "last_modified_by": null,
    }))
}

/// `GET /api/v2/assets/`.
pub async fn list(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, KoboError> {
    check_format(&q)?;
    let num = |k: &str| {
        q.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let limit = num("limit").unwrap_or(100).clamp(1, 1000);
    let start = num("start").or_else(|| num("offset")).unwrap_or(0);
    let all = kobo::assets(&app, &who.actor).await?;
    // `q`: only `asset_type:survey` (everything here is a survey) and `uid:…` are understood;
    // any other filter matches nothing, as KoboToolbox answers unknown fields.
    let filter = q.iter().find(|(k, _)| k == "q").map(|(_, v)| v.trim());
    let all: Vec<Asset> = all
        .into_iter()
        .filter(|a| match filter {
            None | Some("") | Some("asset_type:survey") => true,
            Some(f) => f.strip_prefix("uid:") == Some(a.uid.as_str()),
        })
        .collect();
    let count = all.len();
    let mut results = Vec::new();
    for a in all.iter().skip(start).take(limit) {
        results.push(list_json(&app, &base, a).await?);
    }
    Ok(Json(page(
        &format!("{base}/api/v2/assets/"),
        &q,
        count,
        start,
        limit,
        results,
    )))
}

/// `GET /api/v2/assets/{uid}/`.
pub async fn detail(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(uid): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, KoboError> {
    check_format(&q)?;
    let a = kobo::asset(&app, &who.actor, strip_format(&uid)?).await?;
    let mut v = list_json(&app, &base, &a).await?;
    let schema = a.schema()?;
    let title = v["name"].as_str().unwrap_or_default().to_owned();
    let defs = app.store.published_defs(a.form.id).await?;
    let url = format!("{base}/api/v2/assets/{}/", a.uid);
    let versions: Vec<Value> = defs
        .iter()
        .rev()
        .map(|d| {
            json!({
                "uid": version_uid(d.id),
                "url": format!("{url}versions/{}/", version_uid(d.id)),
                "content_hash": d.md5.trim_start_matches("md5:"),
                "date_deployed": d.published_at.map(datetime),
                "date_modified": datetime(d.created_at),
            })
        })
        .collect();
    let mut perms = Vec::new();
    for (verb, code) in [
        (Verb::FormRead, "view_asset"),
        (Verb::FormUpdate, "change_asset"),
        (Verb::SubmissionCreate, "add_submissions"),
        (Verb::SubmissionRead, "view_submissions"),
        (Verb::SubmissionUpdate, "change_submissions"),
        (Verb::SubmissionUpdate, "validate_submissions"),
        (Verb::SubmissionDelete, "delete_submissions"),
    ] {
        if a.may(verb) {
            perms.push(json!({ "codename": code }));
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("content".into(), super::content::content(&schema, &title));
        o.insert("files".into(), json!([]));
        o.insert(
            "version__content_hash".into(),
            json!(a.def.md5.trim_start_matches("md5:")),
        );
        o.insert("version_count".into(), json!(defs.len().max(1)));
        o.insert(
            "deployed_versions".into(),
            json!({"count": versions.len(), "next": null, "previous": null, "results": versions}),
        );
        o.insert("deployment__links".into(), json!({}));
        o.insert("deployment__data_download_links".into(), json!({}));
        o.insert("effective_permissions".into(), Value::Array(perms));
        o.insert("exports".into(), json!(format!("{url}exports/")));
        o.insert("xform_link".into(), json!(format!("{url}xform/")));
        o.insert("report_styles".into(), json!({}));
        o.insert("advanced_features".into(), json!({}));
        o.insert("project_ownership".into(), Value::Null);
    }
    Ok(Json(v))
}

/// `GET /api/v2/assets/{uid}/content/`.
pub async fn content(
    State(app): State<App>,
    who: AuthUser,
    Path(uid): Path<String>,
) -> Result<Json<Value>, KoboError> {
    let a = kobo::asset(&app, &who.actor, &uid).await?;
    let title = a
        .def
        .title
        .clone()
        .unwrap_or_else(|| a.form.xml_form_id.clone());
    Ok(Json(json!({
        "kind": "asset.content",
        "uid_asset": a.uid,
        "data": super::content::content(&a.schema()?, &title),
    })))
}
