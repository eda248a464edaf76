//! TOTP second factor (M5): enrolment with an `otpauth://` URL and a confirming code, ten
//! single-use recovery codes stored hashed, a code never accepted twice (the store accepts a step
//! only if it is later than the last one), and the check at sign-in.

use fieldvault_crypto::{envelope, mac, random, totp};
use fieldvault_store::UserRow;

use super::ServiceError;
use crate::App;

/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;

fn aad(user_id: i64) -> Vec<u8> {
    format!("totp:user:{user_id}").into_bytes()
}

fn now_secs() -> u64 {
    u64::try_from(fieldvault_store::now_ms() / 1000).unwrap_or(0)
}

/// Starts enrolment: returns the base32 secret and the `otpauth://` URL (for a QR code).
pub async fn enroll(app: &App, user: &UserRow) -> Result<(String, String), ServiceError> {
    if enabled(app, user).await? {
        return Err(ServiceError::Conflict {
            code: "2fa.already_enabled",
            message: "Two-factor sign-in is already on; turn it off (with a code) before enrolling again.".into(),
        });
    }
    let secret = totp::generate_secret()?;
    let key = app.keyring.site_key().await?;
    let sealed = envelope::seal(&key, &aad(user.id), &secret)?;
    app.store.set_totp_pending(user.id, &sealed).await?;
    Ok(totp::enrollment(&secret, &user.username)?)
}

async fn secret(
    app: &App,
    user: &UserRow,
) -> Result<Option<(fieldvault_store::TotpRow, zeroize::Zeroizing<Vec<u8>>)>, ServiceError> {
    let Some(row) = app.store.totp(user.id).await? else {
        return Ok(None);
    };
    let key = app.keyring.site_key().await?;
    let plain = zeroize::Zeroizing::new(envelope::open(&key, &aad(user.id), &row.secret_sealed)?);
    Ok(Some((row, plain)))
}

/// The `otpauth://` URL as a QR code (SVG, 4 px modules with the standard quiet zone) for the
/// enrolment page to show; authenticator apps scan it.
pub fn qr_svg(url: &str) -> Result<String, ServiceError> {
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ServiceError::Internal(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .module_dimensions(4, 4)
        .build())
}

/// Confirms enrolment with a current code; returns the recovery codes (shown once).
pub async fn confirm(app: &App, user: &UserRow, code: &str) -> Result<Vec<String>, ServiceError> {
    let Some((row, secret)) = secret(app, user).await? else {
        return Err(ServiceError::NotFound);
    };
    if row.confirmed_at.is_some() {
        return Err(ServiceError::Conflict {
            code: "2fa.already_enabled",
            message: "Two-factor sign-in is already on.".into(),
        });
    }
    let step = totp::verify(&secret, code, now_secs())
        .ok_or(ServiceError::SecondFactor { required: false })?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        codes.push(random::hex(5)?);
    }
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| mac::sha256(c.as_bytes()).to_vec())
        .collect();
    app.store
        .confirm_totp(user.id, i64::try_from(step).unwrap_or(i64::MAX), &hashes)
        .await?;
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", user.username),
        "user.2fa.enable",
        None,
        serde_json::json!({}),
    )
    .await?;
    Ok(codes)
}

/// Whether the account has a confirmed second factor.
pub async fn enabled(app: &App, user: &UserRow) -> Result<bool, ServiceError> {
    Ok(app
        .store
        .totp(user.id)
        .await?
        .is_some_and(|t| t.confirmed_at.is_some()))
}

/// The check at sign-in: nothing to do without a second factor; otherwise a current TOTP code
/// (accepted once) or an unused recovery code.
pub async fn check(app: &App, user: &UserRow, code: Option<&str>) -> Result<(), ServiceError> {
    let Some((row, secret)) = secret(app, user).await? else {
        return Ok(());
    };
    if row.confirmed_at.is_none() {
        return Ok(());
    }
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(ServiceError::SecondFactor { required: true });
    };
    if let Some(step) = totp::verify(&secret, code, now_secs()) {
        if app
            .store
            .accept_totp_step(user.id, i64::try_from(step).unwrap_or(i64::MAX))
            .await?
        {
            return Ok(());
        }
        return Err(ServiceError::SecondFactor { required: false });
    }
    if app
        .store
        .use_recovery_code(user.id, &mac::sha256(code.to_ascii_lowercase().as_bytes()))
        .await?
    {
        super::audit::record(
            app.store.as_ref(),
            format!("user:{}", user.username),
            "user.2fa.recovery_code",
            None,
            serde_json::json!({}),
        )
        .await?;
        return Ok(());
    }
    Err(ServiceError::SecondFactor { required: false })
}

/// Turns the second factor off (needs a valid code).
pub async fn disable(app: &App, user: &UserRow, code: &str) -> Result<(), ServiceError> {
    check(app, user, Some(code)).await?;
    app.store.delete_totp(user.id).await?;
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", user.username),
        "user.2fa.disable",
        None,
        serde_json::json!({}),
    )
    .await
}
