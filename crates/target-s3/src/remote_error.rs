//! What an S3 failure means to the operator, in one line. opendal's own
//! `Display` carries request context (URLs, upload ids, the raw S3 error
//! document); useful for debugging, noisy in a status file, and not ours to
//! vouch for. So messages are built here from the error's kind, the S3 error
//! code and the innermost cause only, and they name the setting to check.
//! No request, header or configuration value goes into them, so a secret
//! cannot either.

use std::time::Duration;

use opendal::ErrorKind;

/// What a message may name: where the server is and which settings hold
/// the keys.
pub(crate) struct Place<'a> {
    /// `http://127.0.0.1:7480`, or `AWS S3 (us-east-1)`.
    pub endpoint: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
    pub prefix: &'a str,
    /// The variables holding the keys, e.g. `MSS_BACKUP_S3_ACCESS_KEY_ID`.
    pub key_id_var: &'a str,
    pub secret_var: &'a str,
    pub timeout: Duration,
}

/// A failure worded for the operator.
pub(crate) struct Described {
    /// The target cannot be used at all (credentials, bucket, endpoint),
    /// rather than one operation failing part-way.
    pub unavailable: bool,
    pub message: String,
}

/// Words for `err`, one line.
pub(crate) fn describe(err: &opendal::Error, place: &Place<'_>) -> Described {
    let code = s3_code(err.message());
    let code_note = code.map(|c| format!(" ({c})")).unwrap_or_default();
    let unavailable = |message: String| Described {
        unavailable: true,
        message,
    };
    match (err.kind(), code) {
        (ErrorKind::PermissionDenied, Some("InvalidAccessKeyId")) => unavailable(format!(
            "S3 at {} does not know the access key (InvalidAccessKeyId): check {}",
            place.endpoint, place.key_id_var
        )),
        (ErrorKind::PermissionDenied, Some("SignatureDoesNotMatch")) => unavailable(format!(
            "S3 at {} rejected the request signature (SignatureDoesNotMatch): the secret key is wrong, check {}",
            place.endpoint, place.secret_var
        )),
        (ErrorKind::PermissionDenied, Some("RequestTimeTooSkewed")) => unavailable(format!(
            "S3 at {} refused the request because this machine's clock is off (RequestTimeTooSkewed): set the time (timedatectl, NTP)",
            place.endpoint
        )),
        (ErrorKind::PermissionDenied, _) => unavailable(format!(
            "S3 at {} denied access{code_note}: check that the key in {} may read, write and delete under {}/{} in its policy",
            place.endpoint, place.key_id_var, place.bucket, place.prefix
        )),
        (ErrorKind::ConfigInvalid, Some("NoSuchBucket")) => unavailable(format!(
            "bucket {} does not exist at {} (NoSuchBucket): create it, or fix MSS_BACKUP_S3_BUCKET",
            place.bucket, place.endpoint
        )),
        (
            _,
            Some(
                code @ ("AuthorizationHeaderMalformed"
                | "PermanentRedirect"
                | "IllegalLocationConstraintException"),
            ),
        ) => unavailable(format!(
            "bucket {} is not in region {} ({code}): set MSS_BACKUP_S3_REGION to the bucket's region",
            place.bucket, place.region
        )),
        (ErrorKind::RateLimited, _) => Described {
            unavailable: false,
            message: format!(
                "S3 at {} kept asking to slow down{code_note}, even after retries",
                place.endpoint
            ),
        },
        _ if is_timeout(err) => unavailable(format!(
            "S3 at {} did not answer within {} s, even after retries (is it up? a slow link may need a larger MSS_BACKUP_S3_TIMEOUT)",
            place.endpoint,
            place.timeout.as_secs()
        )),
        _ if is_transport(err) => unavailable(format!(
            "cannot reach S3 at {}: {} (check MSS_BACKUP_S3_ENDPOINT and that the server is up)",
            place.endpoint,
            innermost_cause(err)
        )),
        (kind, _) => Described {
            unavailable: false,
            message: match code {
                Some(code) => format!("S3 at {} answered {code} ({kind})", place.endpoint),
                None => format!("{kind}: {}", one_line(err.message())),
            },
        },
    }
}

/// The `Code` of the S3 error document, which opendal keeps in the
/// message as `S3Error { code: "NoSuchBucket", ... }`.
fn s3_code(message: &str) -> Option<&str> {
    let rest = &message[message.find("code: \"")? + "code: \"".len()..];
    let code = &rest[..rest.find('"')?];
    let plausible =
        !code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric());
    plausible.then_some(code)
}

/// opendal's timeout layer fired (a control operation, an IO step or one
/// part of a multipart upload took too long).
fn is_timeout(err: &opendal::Error) -> bool {
    let message = err.message();
    message.contains("timeout reached") || message.contains("write part timeout")
}

/// The HTTP request could not be sent or its answer could not be read:
/// refused, reset, DNS, TLS.
fn is_transport(err: &opendal::Error) -> bool {
    err.kind() == ErrorKind::Unexpected
        && matches!(
            err.message(),
            "send http request" | "read data from http response"
        )
}

/// The deepest error in the source chain (`Connection refused (os error
/// 111)`, `dns error: ...`): the part that says what happened. reqwest's
/// errors in the chain have their URL removed by opendal.
fn innermost_cause(err: &opendal::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    one_line(&cause.to_string())
}

/// At most one line of at most 300 characters.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_s3_error_code() {
        let message =
            r#"S3Error { code: "NoSuchBucket", message: "", resource: "mss", request_id: "tx1" }"#;
        assert_eq!(s3_code(message), Some("NoSuchBucket"));
        assert_eq!(s3_code("send http request"), None);
        assert_eq!(s3_code(r#"code: "a b""#), None);
    }

    #[test]
    fn one_line_joins_and_cuts() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert_eq!(one_line(&"x".repeat(400)).chars().count(), 301);
    }
}
