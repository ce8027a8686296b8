//! A client's own conditions and ranges answered from a fresh entry, in the order RFC
//! 9110 §13.2.2 sets: `If-None-Match` (weak comparison), or else `If-Modified-Since`,
//! gives `304`; then one `bytes` range of a stored `200`, if `If-Range` still names the
//! entry, gives `206`, or `416` when it starts past the end. Several ranges, or a
//! `Range` the parser does not accept, are ignored (RFC 9110 §14.2 allows it): the
//! whole `200`. `If-Match` and `If-Unmodified-Since` are not evaluated here: requests
//! carrying them go to the upstream.

use std::ops::RangeInclusive;
use std::time::SystemTime;

use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, LastModified};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_range_header::RangeUnsatisfiableError;

/// What a fresh entry answers to a request with conditions or a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The entry as stored.
    Whole,
    /// `304 Not Modified`: the client's copy is the entry.
    NotModified,
    /// `206 Partial Content` with these bytes of the body.
    Part(RangeInclusive<u64>),
    /// `416 Range Not Satisfiable`: the range starts past the end of the body.
    Unsatisfiable,
}

/// Request headers whose answer is not simply the entry: a request with any of them is
/// evaluated by [`evaluate`] (or, for the ones it leaves to the upstream, bypasses the
/// cache).
pub const CONDITIONAL: [header::HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Request headers [`evaluate`] leaves to the upstream (requests carrying them bypass
/// the cache): they guard changes rather than save transfers.
pub const LEFT_TO_UPSTREAM: [header::HeaderName; 2] =
    [header::IF_MATCH, header::IF_UNMODIFIED_SINCE];

/// What an entry with `status`, `stored` headers and a body of `len` bytes answers to a
/// `method` request with `request` headers.
pub fn evaluate(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    len: u64,
) -> Answer {
    // RFC 9110 §13.2.1: preconditions apply only where the answer would be a 2xx.
    if !status.is_success() {
        return Answer::Whole;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        if none_match_fails(request, stored) {
            return Answer::NotModified;
        }
    } else if not_modified_since(request, stored) {
        return Answer::NotModified;
    }
    if *method != Method::GET || status != StatusCode::OK {
        return Answer::Whole;
    }
    let mut ranges = request.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Answer::Whole;
    };
    if request.contains_key(header::IF_RANGE) && !if_range_holds(request, stored) {
        return Answer::Whole;
    }
    part(range, len)
}

/// Whether `If-None-Match` names the entry (weak comparison; `*` names any).
fn none_match_fails(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(asked) = request.typed_get::<IfNoneMatch>() else {
        // Not a valid list: no tag in it can match.
        return false;
    };
    match stored.typed_get::<ETag>() {
        Some(etag) => !asked.precondition_passes(&etag),
        None => asked == IfNoneMatch::any(),
    }
}

/// Whether the entry was last modified at or before `If-Modified-Since` (its
/// `Last-Modified`, or else its `Date`, RFC 9111 §4.3.2). An invalid date is ignored.
fn not_modified_since(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(since) = request.typed_get::<IfModifiedSince>() else {
        return false;
    };
    let modified = stored
        .typed_get::<LastModified>()
        .map(SystemTime::from)
        .or_else(|| stored.typed_get::<headers::Date>().map(SystemTime::from));
    modified.is_some_and(|at| !since.is_modified(at))
}

/// Whether `If-Range` still names the entry: a strong entity tag equal to its `ETag`,
/// or a date equal to its `Last-Modified` (RFC 9110 §13.1.5).
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut values = request.get_all(header::IF_RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    if let Some(tag) = decoded::<ETag>(value) {
        return stored
            .typed_get::<ETag>()
            .is_some_and(|etag| !tag.is_weak() && !etag.is_weak() && etag == tag);
    }
    match (
        decoded::<LastModified>(value),
        stored.typed_get::<LastModified>(),
    ) {
        (Some(date), Some(modified)) => SystemTime::from(date) == SystemTime::from(modified),
        _ => false,
    }
}

/// `value` read as the typed header `H`, if it is one.
fn decoded<H: headers::Header>(value: &HeaderValue) -> Option<H> {
    H::decode(&mut std::iter::once(value)).ok()
}

/// The answer to `Range: range` for a body of `len` bytes.
fn part(range: &HeaderValue, len: u64) -> Answer {
    let Ok(range) = range.to_str() else {
        return Answer::Whole;
    };
    match http_range_header::parse_range_header(range).and_then(|parsed| parsed.validate(len)) {
        Ok(ranges) => match <[_; 1]>::try_from(ranges) {
            Ok([one]) => Answer::Part(one),
            // Several ranges, or none (a suffix of an empty body): the whole 200.
            _ => Answer::Whole,
        },
        Err(RangeUnsatisfiableError::Unsatisfiable) => Answer::Unsatisfiable,
        // Malformed, or more ranges or overlaps than the parser tolerates.
        Err(_) => Answer::Whole,
    }
}

#[cfg(test)]
#[path = "conditional_tests.rs"]
mod tests;
