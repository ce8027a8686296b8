//! A response the gateway writes itself, rather than relays: a plugin's answer or one of
//! the gateway's errors ([`crate::error`]). Every such response leaves the proxy through
//! [`LocalReply::into_response`], so each carries the same `Via` as a relayed one.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::ResponseBody;

/// A response made by a plugin or by the gateway, before the response phases see it.
#[derive(Debug)]
pub struct LocalReply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl LocalReply {
    /// The response to write; `via` is appended to `Via` (the admin listener, which
    /// proxies nothing, passes `None`).
    pub fn into_response(self, via: Option<&HeaderValue>) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::full(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        if let Some(via) = via {
            response.headers_mut().append(header::VIA, via.clone());
        }
        response
    }
}
