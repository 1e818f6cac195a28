//! Checks every request passes before `s3s` sees it, and the request id every response
//! carries.
//!
//! `s3s` 0.14.1 verifies SigV4 over the headers a client *chose* to sign, then hands every
//! header to the operation, so an unsigned `x-amz-copy-source` added to a presigned PUT
//! URL turned it into a copy of any object (fixed upstream in s3s PR #818, which needs a
//! newer compiler). [`check`] closes that here, and refuses what the gateway never
//! accepts (ADR 0403):
//!
//! - any `x-amz-*` header not listed in the signature's `SignedHeaders` (header auth) or
//!   `X-Amz-SignedHeaders` (presigned URL), except the payload envelope headers S3 also
//!   exempts ([`UNSIGNED_ENVELOPE_HEADERS`]): `403 AccessDenied`;
//! - Signature Version 2, in headers (`Authorization: AWS id:sig`) or query strings
//!   (`Signature=`, `AWSAccessKeyId=`): no date check, no body hash, so `403 AccessDenied`;
//! - presigned URLs valid for more than [`PRESIGNED_EXPIRES_SECS_MAX`] (7 days, as S3):
//!   `403 AccessDenied`;
//! - browser-form `POST` uploads (`multipart/form-data`), which the gateway does not
//!   implement: `501 NotImplemented`.
//!
//! Every response gets an `x-amz-request-id`, and every XML error body a `<RequestId>`, so
//! a client's report can be matched with the server log (which records the details a
//! client is not told).

use std::collections::HashSet;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use rand_core::{OsRng, RngCore};
use s3s::{Body, HttpResponse, S3Error, s3_error};

/// Longest validity of a presigned URL (`X-Amz-Expires`), in seconds: 7 days, as in S3.
pub const PRESIGNED_EXPIRES_SECS_MAX: u64 = 604_800;

/// `x-amz-*` headers that describe the payload envelope and need not be signed (as in S3).
pub const UNSIGNED_ENVELOPE_HEADERS: [&str; 3] = [
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
];

/// Largest error body the request id is inserted into (S3 error documents are small).
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;

/// A fresh request id: 16 random bytes, hex.
pub fn request_id() -> String {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    hex::encode_upper(id)
}

fn denied(msg: &'static str) -> S3Error {
    s3_error!(AccessDenied, "{msg}")
}

/// Refuses what must never reach `s3s` (see the module docs).
pub fn check<B>(req: &http::Request<B>) -> Result<(), S3Error> {
    let mut auths = req.headers().get_all(AUTHORIZATION).iter();
    let auth = auths.next();
    if auths.next().is_some() {
        return Err(denied("more than one Authorization header"));
    }
    let auth = match auth {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| denied("the Authorization header is not ASCII"))?,
        ),
    };
    if auth.is_some_and(|a| a.starts_with("AWS ")) {
        return Err(denied(
            "Signature Version 2 is not accepted; sign requests with Signature Version 4",
        ));
    }
    let mut presigned = false;
    let mut presigned_headers: Option<String> = None;
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = urlencoding::decode(name).map_err(|_| denied("query is not UTF-8"))?;
        match name.as_ref() {
            "Signature" | "AWSAccessKeyId" => {
                return Err(denied(
                    "Signature Version 2 is not accepted; presign URLs with Signature Version 4",
                ));
            }
            "X-Amz-Signature" => presigned = true,
            "X-Amz-SignedHeaders" => {
                let v = urlencoding::decode(value).map_err(|_| denied("query is not UTF-8"))?;
                presigned_headers = Some(v.into_owned());
            }
            // A negative validity (what SDKs send for an expiry in the past) has expired,
            // as S3 answers; other values that are not numbers are refused by `s3s`.
            "X-Amz-Expires" if value.parse::<i64>().is_ok_and(|s| s < 0) => {
                return Err(denied("Request has expired"));
            }
            "X-Amz-Expires"
                if value
                    .parse::<u64>()
                    .is_ok_and(|s| s > PRESIGNED_EXPIRES_SECS_MAX) =>
            {
                return Err(denied(
                    "X-Amz-Expires must be at most 604800 seconds (7 days)",
                ));
            }
            _ => {}
        }
    }
    // Which signature `s3s` will check: a presigned URL's, else the header's, else none
    // (an anonymous request, which `s3s` refuses).
    let signed: Option<String> = if presigned {
        Some(presigned_headers.unwrap_or_default())
    } else {
        auth.filter(|a| a.starts_with("AWS4-")).map(|a| {
            a.split(',')
                .filter_map(|p| p.trim().strip_prefix("SignedHeaders="))
                .next()
                .unwrap_or("")
                .to_owned()
        })
    };
    if let Some(signed) = signed {
        let signed: HashSet<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
        for name in req.headers().keys() {
            let name = name.as_str(); // lower case, by the `http` crate
            if name.starts_with("x-amz-")
                && !UNSIGNED_ENVELOPE_HEADERS.contains(&name)
                && !signed.contains(name)
            {
                tracing::info!(header = name, "refused a request with an unsigned header");
                return Err(denied("an x-amz-* header is not covered by the signature"));
            }
        }
    }
    if req.method() == http::Method::POST
        && req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
    {
        return Err(s3_error!(
            NotImplemented,
            "browser-form POST uploads are not implemented"
        ));
    }
    Ok(())
}

/// The S3 error response for `e`, with `request_id`.
pub fn error_response(mut e: S3Error, request_id: &str) -> HttpResponse {
    e.set_request_id(request_id);
    let mut resp = match e.to_http_response() {
        Ok(r) => r,
        Err(_) => {
            let mut r = HttpResponse::new(Body::empty());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    };
    tag(&mut resp, request_id);
    resp
}

fn tag(resp: &mut HttpResponse, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
}

/// Adds the request id to a response from `s3s`: the `x-amz-request-id` header, and a
/// `<RequestId>` element in an XML error body that lacks one.
pub fn finish(mut resp: HttpResponse, request_id: &str) -> HttpResponse {
    tag(&mut resp, request_id);
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let Some(bytes) = resp.body().bytes() else {
        return resp;
    };
    if bytes.len() > ERROR_BODY_BYTES_MAX {
        return resp;
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return resp;
    };
    if text.contains("<RequestId>") {
        return resp;
    }
    let Some(at) = text.rfind("</Error>") else {
        return resp;
    };
    let body = format!(
        "{}<RequestId>{request_id}</RequestId>{}",
        &text[..at],
        &text[at..]
    );
    let len = body.len();
    *resp.body_mut() = Body::from(Bytes::from(body));
    if resp.headers().contains_key(CONTENT_LENGTH) {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>, query: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder()
            .method("PUT")
            .uri(format!("/b/k{query}"));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const V4: &str = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, \
                      SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00";

    fn code(r: Result<(), S3Error>) -> String {
        r.unwrap_err().code().as_str().to_owned()
    }

    #[test]
    fn unsigned_amz_headers_are_refused() {
        let date = ("x-amz-date", "20260101T000000Z");
        assert!(check(&req(Some(V4), "", &[date])).is_ok());
        let copy = ("x-amz-copy-source", "/other/payroll.csv");
        assert_eq!(
            code(check(&req(Some(V4), "", &[date, copy]))),
            "AccessDenied"
        );
        let q = "?X-Amz-Signature=00&X-Amz-SignedHeaders=host&X-Amz-Expires=300";
        assert!(
            check(&req(
                None,
                q,
                &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]
            ))
            .is_ok()
        );
        assert_eq!(code(check(&req(None, q, &[copy]))), "AccessDenied");
        let meta = ("x-amz-meta-owner", "mallory");
        assert_eq!(code(check(&req(None, q, &[meta]))), "AccessDenied");
        let q2 = "?X-Amz-Signature=00&X-Amz-SignedHeaders=host%3Bx-amz-meta-owner";
        assert!(check(&req(None, q2, &[meta])).is_ok());
    }

    #[test]
    fn signature_v2_and_long_presigned_urls_are_refused() {
        assert_eq!(
            code(check(&req(Some("AWS AK:c2ln"), "", &[]))),
            "AccessDenied"
        );
        let q = "?AWSAccessKeyId=AK&Expires=1&Signature=c2ln";
        assert_eq!(code(check(&req(None, q, &[]))), "AccessDenied");
        let q = "?X-Amz-Signature=00&X-Amz-SignedHeaders=host&X-Amz-Expires=604801";
        assert_eq!(code(check(&req(None, q, &[]))), "AccessDenied");
        let q = "?X-Amz-Signature=00&X-Amz-SignedHeaders=host&X-Amz-Expires=604800";
        assert!(check(&req(None, q, &[])).is_ok());
        // An expiry in the past (SDKs send a negative validity) has expired: 403, not 400.
        let q = "?X-Amz-Signature=00&X-Amz-SignedHeaders=host&X-Amz-Expires=-1000";
        assert_eq!(code(check(&req(None, q, &[]))), "AccessDenied");
    }

    #[test]
    fn error_bodies_get_the_request_id() {
        let resp = error_response(s3_error!(NoSuchKey, "no such key"), "ABC");
        let body = resp.body().bytes().unwrap();
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("<RequestId>ABC</RequestId>")
        );
        assert_eq!(resp.headers()["x-amz-request-id"], "ABC");
        let mut plain = s3_error!(NoSuchKey, "no such key")
            .to_http_response()
            .unwrap();
        *plain.status_mut() = http::StatusCode::NOT_FOUND;
        let tagged = finish(plain, "DEF");
        let body = tagged.body().bytes().unwrap();
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("<RequestId>DEF</RequestId></Error>")
        );
    }
}
