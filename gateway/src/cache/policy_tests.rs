use std::time::Duration;

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

const TTL: Duration = Duration::from_secs(60);

/// Whether a GET with `request` headers may store a `status` response with `response`.
fn stores(request: &HeaderMap, status: u16, response: &HeaderMap) -> Result<(), NotStored> {
    let uri = Uri::from_static("/r");
    let kept = kept_request_headers(request, response);
    let asked = Asked {
        method: &Method::GET,
        uri: &uri,
        headers: &kept,
    };
    let status = StatusCode::from_u16(status).unwrap();
    storable(&asked, status, response, TTL, SystemTime::now()).map(|_| ())
}

#[test]
fn shared_cache_rules_decide_what_is_stored() {
    let none = HeaderMap::new();
    assert_eq!(
        stores(&none, 200, &none),
        Ok(()),
        "ttl_default makes it fresh"
    );
    assert_eq!(
        stores(&none, 200, &headers(&[("cache-control", "max-age=5")])),
        Ok(())
    );
    for refused in ["no-store", "private", "private, max-age=60"] {
        let response = headers(&[("cache-control", refused)]);
        assert_eq!(
            stores(&none, 200, &response),
            Err(NotStored::Rules),
            "{refused}"
        );
    }
    // A status that is not understood, or not cacheable by default without freshness.
    assert_eq!(stores(&none, 206, &none), Err(NotStored::Rules));
    assert_eq!(stores(&none, 500, &none), Err(NotStored::Rules));
    assert_eq!(stores(&none, 404, &none), Ok(()));
    assert_eq!(
        stores(&none, 200, &headers(&[("vary", "accept, *")])),
        Err(NotStored::VaryStar)
    );
    assert_eq!(
        stores(&none, 200, &headers(&[("set-cookie", "id=1")])),
        Err(NotStored::SetCookie)
    );
    assert_eq!(
        stores(&headers(&[("cache-control", "no-store")]), 200, &none),
        Err(NotStored::Rules),
        "a request's no-store"
    );
}

#[test]
fn an_authorized_request_is_stored_only_when_the_response_allows_it() {
    let auth = headers(&[("authorization", "Bearer secret")]);
    assert_eq!(stores(&auth, 200, &HeaderMap::new()), Err(NotStored::Rules));
    assert_eq!(
        stores(&auth, 200, &headers(&[("cache-control", "max-age=60")])),
        Err(NotStored::Rules)
    );
    for allowing in [
        "public, max-age=60",
        "s-maxage=60",
        "must-revalidate, max-age=60",
    ] {
        let response = headers(&[("cache-control", allowing)]);
        assert_eq!(stores(&auth, 200, &response), Ok(()), "{allowing}");
    }
    // The credential itself is not kept.
    let kept = kept_request_headers(&auth, &HeaderMap::new());
    assert_eq!(kept["authorization"], "(present)");
}

#[test]
fn freshness_comes_from_the_response_else_the_routes_default() {
    let none = HeaderMap::new();
    let asked = plain_get();
    let now = SystemTime::now();
    let ok = StatusCode::OK;
    let ttl = |response: &HeaderMap, default: Duration| {
        policy(&asked, ok, response, default, now).time_to_live(now)
    };
    assert_eq!(ttl(&none, TTL), TTL);
    assert_eq!(
        ttl(&headers(&[("cache-control", "max-age=5")]), TTL),
        Duration::from_secs(5)
    );
    assert_eq!(
        ttl(
            &headers(&[("cache-control", "max-age=5, s-maxage=30")]),
            TTL
        ),
        Duration::from_secs(30),
        "s-maxage wins in a shared cache"
    );
    let expiring = headers(&[
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("expires", "Sun, 06 Nov 1994 08:51:37 GMT"),
    ]);
    assert_eq!(
        ttl(&expiring, TTL),
        Duration::from_secs(120),
        "Expires - Date"
    );
    assert_eq!(ttl(&none, Duration::ZERO), Duration::ZERO);
    // Zero freshness and no validator: never stored; with one, stored to revalidate.
    assert_eq!(
        storable(&asked, ok, &none, Duration::ZERO, now).map(|_| ()),
        Err(NotStored::Useless)
    );
    let tagged = headers(&[("etag", "\"v1\"")]);
    assert!(storable(&asked, ok, &tagged, Duration::ZERO, now).is_ok());
    // `Age` from upstream counts against freshness.
    assert_eq!(
        ttl(
            &headers(&[("cache-control", "max-age=50"), ("age", "20")]),
            TTL
        ),
        Duration::from_secs(30)
    );
}

#[test]
fn a_request_may_refuse_a_stored_response_and_vary_selects_the_variant() {
    let uri = Uri::from_static("/r");
    let now = SystemTime::now();
    let stored_request = headers(&[("accept-language", "fr")]);
    let response = headers(&[("cache-control", "max-age=60"), ("vary", "Accept-Language")]);
    let kept = kept_request_headers(&stored_request, &response);
    let asked = |h: &HeaderMap| {
        let policy = policy(
            &Asked {
                method: &Method::GET,
                uri: &uri,
                headers: &kept,
            },
            StatusCode::OK,
            &response,
            TTL,
            now,
        );
        let asked = Asked {
            method: &Method::GET,
            uri: &uri,
            headers: h,
        };
        (
            fresh_for(&policy, &asked, now),
            same_variant(&policy, &asked, now),
        )
    };
    assert_eq!(asked(&stored_request), (true, true));
    assert_eq!(
        asked(&headers(&[("accept-language", "de")])),
        (false, false)
    );
    let no_cache = headers(&[("accept-language", "fr"), ("cache-control", "no-cache")]);
    assert_eq!(asked(&no_cache), (false, true), "revalidate, same variant");
}

#[test]
fn stale_may_be_served_unless_the_response_forbids_it() {
    assert!(may_serve_stale(&headers(&[("cache-control", "max-age=5")])));
    for forbids in [
        "must-revalidate",
        "proxy-revalidate",
        "no-cache",
        "s-maxage=5",
        "Must-Revalidate",
    ] {
        let h = headers(&[("cache-control", forbids)]);
        assert!(!may_serve_stale(&h), "{forbids}");
    }
}
