//! Reading a body whole, for the plugins' body phases and the mirror, within a limit.

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::request_body::RequestBody;

/// Reads a client's request body whole: 413 for one larger than `limit` (refused
/// before reading when its `Content-Length` says so), 400 for one that breaks off or
/// is malformed.
pub(super) async fn read_request(
    body: RequestBody,
    limit: u64,
    headers: &HeaderMap,
) -> Result<Bytes, ProxyError> {
    // The route's own limit, when smaller, is the one the client hears of.
    let limit = body.limit().map_or(limit, |route| route.min(limit));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ProxyError::BodyTooLarge { limit }),
        Err(e) => match RequestBody::too_large(&*e) {
            Some(too_large) => Err(ProxyError::BodyTooLarge {
                limit: too_large.limit,
            }),
            None => Err(ProxyError::BadBody(e.to_string())),
        },
    }
}

/// Reads an upstream's response body whole for the response-body phases (a 502 for
/// one larger than `limit`, or broken).
pub(super) async fn read_response(body: ResponseBody, limit: u64) -> Result<Bytes, ProxyError> {
    let too_large = ProxyError::ResponseBodyForPlugin { limit };
    // The body itself, not its stream: a body the cache records is stored as the
    // phases read it.
    Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|_| too_large)
}
