//! The settings QR code that configures ODK Collect (and KoboCollect, which reads the same
//! format) for a collector: JSON settings, zlib-deflated, base64 — what Collect's "Configure with
//! QR code" screen scans and what ODK Central's app-user panel shows.

use std::io::Write as _;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::service::ServiceError;

/// The settings a collector's device gets: the project's URL with the collector's token, forms
/// kept exactly as the server lists them, finished forms sent on any network.
pub fn settings(server_url: &str, project_name: &str) -> Value {
    json!({
        "general": {
            "server_url": server_url,
            "form_update_mode": "match_exactly",
            "autosend": "wifi_and_cellular",
        },
        "admin": {},
        "project": { "name": project_name },
    })
}

/// The QR payload: the settings JSON, zlib-deflated, in standard base64.
pub fn payload(settings: &Value) -> Result<String, ServiceError> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(settings.to_string().as_bytes())
        .map_err(|e| ServiceError::Internal(format!("deflate: {e}")))?;
    let bytes = z
        .finish()
        .map_err(|e| ServiceError::Internal(format!("deflate: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The payload as an SVG QR code (low error correction keeps it scannable at phone size; the
/// payload is around 200 characters).
pub fn qr_svg(payload: &str) -> Result<String, ServiceError> {
    let code = qrcode::QrCode::with_error_correction_level(payload.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| ServiceError::Internal(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .module_dimensions(4, 4)
        .build())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn payload_inflates_to_the_settings() {
        let s = settings("https://fv.example/v1/key/abc/projects/3", "Census");
        let p = payload(&s).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(p.as_bytes())
            .unwrap();
        let mut out = String::new();
        flate2::read::ZlibDecoder::new(&raw[..])
            .read_to_string(&mut out)
            .unwrap();
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back["general"]["server_url"],
            "https://fv.example/v1/key/abc/projects/3"
        );
        assert!(qr_svg(&p).unwrap().contains("<svg"));
    }
}
