//! 2FA administration over real HTTP: the enrolment QR code decodes to the otpauth URL,
//! administrators reset a user's second factor and require one per user.

use serde_json::{Value, json};

use crate::accounts_util::{PW, audit, audited, bearer, enrol, my_id, try_login};
use crate::harness::{Server, admin_session, client, create_user};

/// Rasterises the QR code SVG (`M{x} {y}h{w}v{h}H{x}V{y}` rectangles on a light background, as
/// the `qrcode` crate draws them) and decodes it with an independent decoder (rqrr).
fn decode_qr_svg(svg: &str) -> String {
    let attr = |name: &str| -> usize {
        let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[start..].split('"').next().unwrap().parse().unwrap()
    };
    let (w, h) = (attr("width"), attr("height"));
    let path = svg
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut dark = vec![false; w * h];
    for rect in path.split('M').filter(|r| !r.is_empty()) {
        // "x y" then h{w}v{h}H..V..
        let (xy, rest) = rect.split_once('h').unwrap();
        let (x, y) = xy.split_once(' ').unwrap();
        let (rw, rest) = rest.split_once('v').unwrap();
        let rh = rest.split('H').next().unwrap();
        let (x, y, rw, rh): (usize, usize, usize, usize) = (
            x.parse().unwrap(),
            y.parse().unwrap(),
            rw.parse().unwrap(),
            rh.parse().unwrap(),
        );
        for yy in y..y + rh {
            for xx in x..x + rw {
                dark[yy * w + xx] = true;
            }
        }
    }
    let mut img = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| dark[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    grids[0].decode().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_qr_code_decodes_to_the_otpauth_url() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let alice = bearer(&srv, "alice", PW).await;
    let e: Value = client()
        .post(srv.url("/v1/users/current/2fa"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = e["otpauthUrl"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    let svg = e["qrSvg"].as_str().unwrap();
    assert!(svg.contains("<svg") && !svg.contains("<script"), "{svg}");
    assert_eq!(decode_qr_svg(svg), url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_reset_and_require_second_factors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    create_user(dir.path(), &[], "bob", false);
    let admin = admin_session(&srv, dir.path(), &[], "admin").await;
    let c = client();

    // Alice enrols, then loses her phone: an administrator resets her second factor.
    let alice = bearer(&srv, "alice", PW).await;
    let alice_id = my_id(&srv, &alice).await;
    enrol(&srv, &alice).await;
    assert_eq!(
        try_login(&srv, "alice", PW).await,
        (401, "auth.second_factor_required".into())
    );
    let r = c
        .post(srv.url(&format!("/v1/admin/users/{alice_id}/2fa/reset")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "not for non-administrators");
    let r = c
        .post(srv.url(&format!("/v1/admin/users/{alice_id}/2fa/reset")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "her sessions ended");
    assert_eq!(
        try_login(&srv, "alice", PW).await.0,
        200,
        "password alone again"
    );
    let r = c
        .post(srv.url("/v1/admin/users/99999/2fa/reset"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Bob is required to use a second factor: until he enrols he reaches only enrolment and
    // sign-out.
    let bob = bearer(&srv, "bob", PW).await;
    let bob_id = my_id(&srv, &bob).await;
    let r = c
        .post(srv.url(&format!("/v1/admin/users/{bob_id}/require-2fa")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["require2fa"], true);
    let r = c
        .get(srv.url("/v1/projects"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "auth.second_factor_enrolment_required"
    );
    let r = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&bob)
        .json(&json!({"name": "x", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no way around it with a token");
    let r = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    enrol(&srv, &bob).await;
    let r = c
        .get(srv.url("/v1/projects"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "enrolled: everything again");
    // From now on his sign-in needs the code.
    assert_eq!(
        try_login(&srv, "bob", PW).await,
        (401, "auth.second_factor_required".into())
    );

    let log = audit(&srv, &admin).await;
    assert!(audited(&log, "user.2fa.reset", "user:alice"));
    assert!(audited(&log, "user.2fa.require", "user:bob"));
}
