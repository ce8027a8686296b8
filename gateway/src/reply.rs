//! A response the gateway writes itself, rather than relays: a plugin's answer, a
//! route's `respond`, or one of the gateway's errors ([`crate::error`]). Every such response leaves the proxy through
//! [`LocalReply::into_response`], so each carries the same `Via` as a relayed one.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::ResponseBody;
use crate::config::DirectResponse;

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
    /// A route's fixed answer (`respond`).
    pub fn direct(direct: &DirectResponse) -> LocalReply {
        let mut headers = HeaderMap::new();
        if let Some(content_type) = &direct.content_type {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        LocalReply {
            status: direct.status,
            headers,
            body: direct.body.clone(),
        }
    }

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
