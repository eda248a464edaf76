//! Pure renderers for the OpenRosa XML documents: the form list, the media manifest and the
//! `OpenRosaResponse` body, plus the header values every OpenRosa response carries.
//!
//! Why hand-written strings rather than an XML library: the documents are tiny and fixed in
//! shape, and what matters is exactly the shape the clients accept (see `specs/openrosa.md`
//! §4, §5, §6.4). Collect silently skips list children that are not in the
//! `xformsList` namespace, rejects the *whole* list when one `xform` lacks `formID`, `name` or
//! `downloadUrl`, and rejects a manifest with a missing hash. Keeping the templates literal makes
//! those rules visible and testable. Every interpolated value goes through [`escape`], so a form
//! title or URL can never break out of its element.
//!
//! Nothing here does I/O: handlers gather the data, these functions only format it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Value of the `X-OpenRosa-Version` header. Collect treats a formList or manifest answer
/// without it as "not an OpenRosa server".
pub const OPENROSA_VERSION: &str = "1.0";

/// Content type of formList, manifest and `OpenRosaResponse` bodies. Collect only checks that
/// the header *contains* `text/xml`; `application/xml` is refused.
pub const XML_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// One form as listed by `GET {base}/formList`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormListEntry {
    /// The primary instance root's `id` attribute.
    pub form_id: String,
    /// The form's `<h:title>`.
    pub name: String,
    /// The root's `version` attribute; `None` renders an empty `<version/>`, which Collect maps
    /// to "no version".
    pub version: Option<String>,
    /// `md5:<32 lowercase hex>` of the exact bytes served at `download_url`. Passed through
    /// unchanged: the caller computes it from the stored bytes.
    pub hash: String,
    /// Absolute URL of the XForm.
    pub download_url: String,
    /// Absolute URL of the manifest; only `Some` when the form has media or data attachments
    /// (Central omits the element otherwise).
    pub manifest_url: Option<String>,
}

/// One attachment listed in a form's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFile {
    /// Unrooted relative name, as referenced by the form (`jr://images/logo.png` → `logo.png`).
    pub filename: String,
    /// `md5:<hex>` of the file bytes; Collect rejects the whole manifest without it.
    pub hash: String,
    /// Absolute URL returning the raw bytes.
    pub download_url: String,
}

/// Escapes `text` for use both as element content and as a quoted attribute value.
///
/// All five predefined entities are replaced, so the same function is safe in either position
/// whatever quote character surrounds the attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

/// Appends `<name>escaped value</name>` on its own indented line.
fn element(out: &mut String, indent: &str, name: &str, value: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(value));
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// Renders the `xformsList` document answered by `GET {base}/formList` (spec §4).
///
/// Element order and presence follow Central: `formID`, `name`, `version` (empty when the form
/// has none), `hash`, then — only when `verbose` — `descriptionText`, then `downloadUrl` and, only
/// for forms with attachments, `manifestUrl`. The spec forbids the optional description without
/// `verbose=true`; with it, like Central, the description is the form's title since forms carry
/// no separate description. `xforms-group` and `majorMinorVersion` are not emitted: Collect
/// ignores the former and the latter is not part of the list Collect parses.
pub fn form_list(entries: &[FormListEntry], verbose: bool) -> String {
    let mut out = String::from(XML_DECLARATION);
    out.push_str("<xforms xmlns=\"http://openrosa.org/xforms/xformsList\">\n");
    for entry in entries {
        out.push_str("  <xform>\n");
        element(&mut out, "    ", "formID", &entry.form_id);
        element(&mut out, "    ", "name", &entry.name);
        element(
            &mut out,
            "    ",
            "version",
            entry.version.as_deref().unwrap_or(""),
        );
        element(&mut out, "    ", "hash", &entry.hash);
        if verbose {
            element(&mut out, "    ", "descriptionText", &entry.name);
        }
        element(&mut out, "    ", "downloadUrl", &entry.download_url);
        if let Some(manifest_url) = &entry.manifest_url {
            element(&mut out, "    ", "manifestUrl", manifest_url);
        }
        out.push_str("  </xform>\n");
    }
    out.push_str("</xforms>\n");
    out
}

/// Renders the `xformsManifest` document answered by `GET manifestUrl` (spec §5).
///
/// Callers list only attachments that were actually uploaded, as Central does; an empty slice
/// renders an empty manifest.
pub fn manifest(files: &[MediaFile]) -> String {
    let mut out = String::from(XML_DECLARATION);
    out.push_str("<manifest xmlns=\"http://openrosa.org/xforms/xformsManifest\">\n");
    for file in files {
        out.push_str("  <mediaFile>\n");
        element(&mut out, "    ", "filename", &file.filename);
        element(&mut out, "    ", "hash", &file.hash);
        element(&mut out, "    ", "downloadUrl", &file.download_url);
        out.push_str("  </mediaFile>\n");
    }
    out.push_str("</manifest>\n");
    out
}

/// Renders the `OpenRosaResponse` body sent with every submission answer, success or error
/// (spec §6.4).
///
/// Collect shows the first `<message>` text to the user, so `message` should be written for a
/// person. `nature` is optional; Central uses `submit_success` and `error`.
pub fn openrosa_response(message: &str, nature: Option<&str>) -> String {
    let mut out = String::from(XML_DECLARATION);
    out.push_str("<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\" items=\"0\">\n");
    out.push_str("  <message");
    if let Some(nature) = nature {
        out.push_str(" nature=\"");
        out.push_str(&escape(nature));
        out.push('"');
    }
    out.push('>');
    out.push_str(&escape(message));
    out.push_str("</message>\n");
    out.push_str("</OpenRosaResponse>\n");
    out
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats `t` as an RFC 7231 IMF-fixdate (`Tue, 18 Jun 2024 10:00:00 GMT`) for the `Date`
/// header. Sub-second precision is dropped (floored).
///
/// Neither `humantime` (RFC 3339 only) nor `http` formats this, so the date is computed here;
/// see [`civil_from_days`].
pub fn http_date(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // Floor towards the past: 0.5 s before the epoch is 23:59:59 of the day before.
            if d.subsec_nanos() > 0 {
                -whole - 1
            } else {
                -whole
            }
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 4 from Sunday).
    let weekday = WEEKDAYS
        .get(usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0))
        .copied()
        .unwrap_or("Sun");
    let month_name = MONTHS
        .get(usize::try_from(month - 1).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} GMT",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month 1..=12, day 1..=31)`.
///
/// Howard Hinnant's `civil_from_days`, from "chrono-Compatible Low-Level Date Algorithms"
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>): shift the epoch to
/// 0000-03-01 so the leap day ends the year, split into 400-year eras of 146 097 days, then
/// recover year-of-era, day-of-year and a March-based month.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn household() -> FormListEntry {
        FormListEntry {
            form_id: "household".into(),
            name: "Household survey".into(),
            version: Some("2024061801".into()),
            hash: "md5:bfdc3bd6ea56f4804144092d65c67040".into(),
            download_url: "https://data.example.org/p/3/forms/household.xml".into(),
            manifest_url: None,
        }
    }

    fn clinic() -> FormListEntry {
        FormListEntry {
            form_id: "clinic_visit".into(),
            name: "Clinic visit".into(),
            version: Some("7".into()),
            hash: "md5:5d41402abc4b2a76b9719d911017c592".into(),
            download_url: "https://data.example.org/p/3/forms/clinic_visit.xml".into(),
            manifest_url: Some("https://data.example.org/p/3/forms/clinic_visit/manifest".into()),
        }
    }

    /// The text of each `<name>…</name>` in document order (a tolerant structural check).
    fn texts(doc: &str, name: &str) -> Vec<String> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let mut found = Vec::new();
        let mut rest = doc;
        while let Some(start) = rest.find(&open) {
            let after = &rest[start + open.len()..];
            let end = after.find(&close).expect("unclosed element");
            found.push(after[..end].to_string());
            rest = &after[end + close.len()..];
        }
        found
    }

    /// Asserts every `<` opens a matching, properly nested tag (declaration excepted).
    fn assert_well_nested(doc: &str) {
        let body = doc.strip_prefix(XML_DECLARATION).expect("declaration");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(lt) = rest.find('<') {
            let gt = rest[lt..].find('>').expect("unterminated tag") + lt;
            let tag = &rest[lt + 1..gt];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "in {doc}");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name.to_string());
            }
            rest = &rest[gt + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?} in {doc}");
    }

    #[test]
    fn form_list_matches_spec_shape() {
        let doc = form_list(&[household(), clinic()], false);
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert!(doc.contains("<xforms xmlns=\"http://openrosa.org/xforms/xformsList\">"));
        assert_well_nested(&doc);
        assert_eq!(texts(&doc, "formID"), ["household", "clinic_visit"]);
        assert_eq!(texts(&doc, "name"), ["Household survey", "Clinic visit"]);
        assert_eq!(texts(&doc, "version"), ["2024061801", "7"]);
        assert_eq!(texts(&doc, "xform").len(), 2);
        // No prefixed or re-declared namespaces: every child inherits the default namespace.
        assert_eq!(doc.matches("xmlns").count(), 1);
        assert!(!doc.contains("xforms-group"));
        assert!(!doc.contains("majorMinorVersion"));
    }

    #[test]
    fn form_list_element_order_follows_central() {
        let doc = form_list(&[clinic()], true);
        let order = [
            "<formID>",
            "<name>",
            "<version>",
            "<hash>",
            "<descriptionText>",
            "<downloadUrl>",
            "<manifestUrl>",
        ];
        let positions: Vec<usize> = order.iter().map(|tag| doc.find(tag).expect(tag)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{doc}");
    }

    #[test]
    fn form_list_hash_is_passed_through() {
        let doc = form_list(&[household()], false);
        assert_eq!(
            texts(&doc, "hash"),
            ["md5:bfdc3bd6ea56f4804144092d65c67040"]
        );
    }

    #[test]
    fn manifest_url_only_when_present() {
        let doc = form_list(&[household()], false);
        assert!(!doc.contains("manifestUrl"));
        let doc = form_list(&[household(), clinic()], false);
        assert_eq!(
            texts(&doc, "manifestUrl"),
            ["https://data.example.org/p/3/forms/clinic_visit/manifest"]
        );
    }

    #[test]
    fn description_only_when_verbose() {
        let plain = form_list(&[household(), clinic()], false);
        assert!(!plain.contains("descriptionText"));
        assert!(!plain.contains("descriptionUrl"));
        let verbose = form_list(&[household(), clinic()], true);
        assert_eq!(
            texts(&verbose, "descriptionText"),
            ["Household survey", "Clinic visit"]
        );
        assert_well_nested(&verbose);
    }

    #[test]
    fn missing_version_renders_empty_element() {
        let entry = FormListEntry {
            version: None,
            ..household()
        };
        let doc = form_list(&[entry], false);
        assert!(doc.contains("<version></version>"));
        assert_eq!(texts(&doc, "version"), [""]);
    }

    #[test]
    fn empty_form_list_is_valid() {
        let doc = form_list(&[], true);
        assert!(doc.contains("<xforms xmlns=\"http://openrosa.org/xforms/xformsList\">"));
        assert!(!doc.contains("<xform>"));
        assert_well_nested(&doc);
    }

    #[test]
    fn form_list_escapes_every_value() {
        let entry = FormListEntry {
            form_id: "a&b".into(),
            name: "Tom & \"Jerry\" <'s>".into(),
            version: Some("1<2".into()),
            hash: "md5:&".into(),
            download_url: "https://x.example/f.xml?a=1&b=2".into(),
            manifest_url: Some("https://x.example/m?a=1&b=2".into()),
        };
        let doc = form_list(&[entry], true);
        assert_well_nested(&doc);
        assert_eq!(texts(&doc, "formID"), ["a&amp;b"]);
        assert_eq!(
            texts(&doc, "name"),
            ["Tom &amp; &quot;Jerry&quot; &lt;&apos;s&gt;"]
        );
        assert_eq!(
            texts(&doc, "descriptionText"),
            ["Tom &amp; &quot;Jerry&quot; &lt;&apos;s&gt;"]
        );
        assert_eq!(texts(&doc, "version"), ["1&lt;2"]);
        assert_eq!(texts(&doc, "hash"), ["md5:&amp;"]);
        assert_eq!(
            texts(&doc, "downloadUrl"),
            ["https://x.example/f.xml?a=1&amp;b=2"]
        );
        assert_eq!(
            texts(&doc, "manifestUrl"),
            ["https://x.example/m?a=1&amp;b=2"]
        );
        assert!(!doc.contains("a=1&b"));
    }

    #[test]
    fn manifest_matches_spec_shape() {
        let doc = manifest(&[
            MediaFile {
                filename: "logo.png".into(),
                hash: "md5:c28fc778a9291672baddd04ac880a05d".into(),
                download_url:
                    "https://data.example.org/p/3/forms/clinic_visit/attachments/logo.png".into(),
            },
            MediaFile {
                filename: "villages.csv".into(),
                hash: "md5:00000000000000000000000000000000".into(),
                download_url: "https://data.example.org/a?name=villages.csv&v=2".into(),
            },
        ]);
        assert!(doc.starts_with(XML_DECLARATION));
        assert!(doc.contains("<manifest xmlns=\"http://openrosa.org/xforms/xformsManifest\">"));
        assert_eq!(doc.matches("xmlns").count(), 1);
        assert_well_nested(&doc);
        assert_eq!(texts(&doc, "mediaFile").len(), 2);
        assert_eq!(texts(&doc, "filename"), ["logo.png", "villages.csv"]);
        assert_eq!(
            texts(&doc, "hash"),
            [
                "md5:c28fc778a9291672baddd04ac880a05d",
                "md5:00000000000000000000000000000000"
            ]
        );
        assert_eq!(
            texts(&doc, "downloadUrl"),
            [
                "https://data.example.org/p/3/forms/clinic_visit/attachments/logo.png",
                "https://data.example.org/a?name=villages.csv&amp;v=2"
            ]
        );
    }

    #[test]
    fn manifest_escapes_filename_and_empty_manifest() {
        let doc = manifest(&[MediaFile {
            filename: "a&<>\"'.png".into(),
            hash: "md5:1".into(),
            download_url: "u".into(),
        }]);
        assert_eq!(texts(&doc, "filename"), ["a&amp;&lt;&gt;&quot;&apos;.png"]);
        let empty = manifest(&[]);
        assert!(!empty.contains("<mediaFile>"));
        assert_well_nested(&empty);
    }

    #[test]
    fn openrosa_response_matches_spec_example() {
        let doc = openrosa_response("Submission received.", Some("submit_success"));
        assert!(doc.contains(
            "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\" items=\"0\">\n  \
             <message nature=\"submit_success\">Submission received.</message>\n\
             </OpenRosaResponse>"
        ));
        assert_well_nested(&doc);
    }

    #[test]
    fn openrosa_response_without_nature_and_escaped() {
        let doc = openrosa_response("Form <x> & \"y\" isn't open", None);
        assert!(
            doc.contains("<message>Form &lt;x&gt; &amp; &quot;y&quot; isn&apos;t open</message>")
        );
        let doc = openrosa_response("m", Some("a\"b&c"));
        assert!(doc.contains("<message nature=\"a&quot;b&amp;c\">m</message>"));
        assert_well_nested(&doc);
    }

    #[test]
    fn escape_handles_all_five_and_leaves_the_rest() {
        assert_eq!(escape("&<>\"'"), "&amp;&lt;&gt;&quot;&apos;");
        assert_eq!(escape("Ça va? ü 日本"), "Ça va? ü 日本");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn constants() {
        assert_eq!(OPENROSA_VERSION, "1.0");
        assert!(XML_CONTENT_TYPE.contains("text/xml"));
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn http_date_known_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        // 2000-02-29 (leap day in a century leap year) = day 11016.
        assert_eq!(
            http_date(at(11_016 * 86_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(at(1_718_704_800)),
            "Tue, 18 Jun 2024 10:00:00 GMT"
        );
        // Last second of a year and sub-second truncation.
        assert_eq!(
            http_date(at(1_704_067_199) + Duration::from_millis(999)),
            "Sun, 31 Dec 2023 23:59:59 GMT"
        );
        // 2100 is not a leap year: 2100-02-28 is followed by 2100-03-01.
        assert_eq!(
            http_date(at(4_107_542_400)),
            "Mon, 01 Mar 2100 00:00:00 GMT"
        );
    }

    #[test]
    fn http_date_before_epoch() {
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(1)),
            "Wed, 31 Dec 1969 23:59:59 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_millis(500)),
            "Wed, 31 Dec 1969 23:59:59 GMT"
        );
    }

    #[test]
    fn civil_from_days_round_trips_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_892), (2024, 6, 18));
    }
}
