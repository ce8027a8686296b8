use super::*;

const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    map
}

/// What a GET with `request` headers gets from a stored 200 of 100 bytes with an ETag
/// and a Last-Modified.
fn get(request: &[(&str, &str)]) -> Answer {
    let stored = headers(&[("etag", "\"v1\""), ("last-modified", LM)]);
    evaluate(
        &Method::GET,
        &headers(request),
        StatusCode::OK,
        &stored,
        100,
    )
}

#[test]
fn if_none_match_compares_weakly_and_takes_precedence_over_if_modified_since() {
    assert_eq!(get(&[("if-none-match", "\"v1\"")]), Answer::NotModified);
    assert_eq!(get(&[("if-none-match", "W/\"v1\"")]), Answer::NotModified);
    assert_eq!(
        get(&[("if-none-match", "\"v0\", \"v1\"")]),
        Answer::NotModified
    );
    assert_eq!(get(&[("if-none-match", "*")]), Answer::NotModified);
    assert_eq!(get(&[("if-none-match", "\"v2\"")]), Answer::Whole);
    // When If-None-Match is present, If-Modified-Since is not looked at.
    assert_eq!(
        get(&[("if-none-match", "\"v2\""), ("if-modified-since", LM)]),
        Answer::Whole
    );
    // Garbage matches nothing.
    assert_eq!(get(&[("if-none-match", "v1")]), Answer::Whole);
    assert_eq!(get(&[("if-none-match", "\"v1")]), Answer::Whole);
    // An entry without an ETag matches only `*`.
    let bare = headers(&[]);
    let asked = headers(&[("if-none-match", "\"v1\"")]);
    assert_eq!(
        evaluate(&Method::GET, &asked, StatusCode::OK, &bare, 1),
        Answer::Whole
    );
    let any = headers(&[("if-none-match", "*")]);
    assert_eq!(
        evaluate(&Method::HEAD, &any, StatusCode::OK, &bare, 1),
        Answer::NotModified
    );
}

#[test]
fn if_modified_since_compares_with_last_modified_or_else_date() {
    assert_eq!(get(&[("if-modified-since", LM)]), Answer::NotModified);
    let later = "Mon, 07 Nov 1994 08:49:37 GMT";
    assert_eq!(get(&[("if-modified-since", later)]), Answer::NotModified);
    let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
    assert_eq!(get(&[("if-modified-since", earlier)]), Answer::Whole);
    assert_eq!(get(&[("if-modified-since", "yesterday")]), Answer::Whole);
    // No Last-Modified: the Date the upstream sent.
    let dated = headers(&[("date", LM)]);
    let asked = headers(&[("if-modified-since", later)]);
    assert_eq!(
        evaluate(&Method::GET, &asked, StatusCode::OK, &dated, 1),
        Answer::NotModified
    );
    // Neither: modified, as far as the cache can tell.
    assert_eq!(
        evaluate(&Method::GET, &asked, StatusCode::OK, &headers(&[]), 1),
        Answer::Whole
    );
}

#[test]
fn conditions_apply_only_to_successful_entries() {
    let stored = headers(&[("etag", "\"v1\"")]);
    let asked = headers(&[("if-none-match", "\"v1\""), ("range", "bytes=0-1")]);
    for status in [StatusCode::MOVED_PERMANENTLY, StatusCode::MULTIPLE_CHOICES] {
        assert_eq!(
            evaluate(&Method::GET, &asked, status, &stored, 10),
            Answer::Whole
        );
    }
    // A range of a 203 is not served (only a stored 200 is a full representation).
    let ranged = headers(&[("range", "bytes=0-1")]);
    assert_eq!(
        evaluate(
            &Method::GET,
            &ranged,
            StatusCode::NON_AUTHORITATIVE_INFORMATION,
            &stored,
            10
        ),
        Answer::Whole
    );
}

#[test]
fn a_single_range_is_served_in_each_of_its_forms() {
    assert_eq!(get(&[("range", "bytes=0-9")]), Answer::Part(0..=9));
    assert_eq!(get(&[("range", "bytes=90-")]), Answer::Part(90..=99));
    assert_eq!(get(&[("range", "bytes=-10")]), Answer::Part(90..=99));
    assert_eq!(get(&[("range", "bytes=0-")]), Answer::Part(0..=99));
    // An end past the body is cut to it; a suffix longer than the body is all of it.
    assert_eq!(get(&[("range", "bytes=95-500")]), Answer::Part(95..=99));
    assert_eq!(get(&[("range", "bytes=-500")]), Answer::Part(0..=99));
    // A HEAD ignores Range.
    let asked = headers(&[("range", "bytes=0-9")]);
    let stored = headers(&[]);
    assert_eq!(
        evaluate(&Method::HEAD, &asked, StatusCode::OK, &stored, 100),
        Answer::Whole
    );
}

#[test]
fn a_range_past_the_end_is_unsatisfiable() {
    assert_eq!(get(&[("range", "bytes=100-")]), Answer::Unsatisfiable);
    assert_eq!(get(&[("range", "bytes=100-200")]), Answer::Unsatisfiable);
    assert_eq!(get(&[("range", "bytes=-0")]), Answer::Unsatisfiable);
    let asked = headers(&[("range", "bytes=0-0")]);
    assert_eq!(
        evaluate(&Method::GET, &asked, StatusCode::OK, &headers(&[]), 0),
        Answer::Unsatisfiable
    );
    // A suffix of an empty body selects nothing: the whole (empty) 200.
    let suffix = headers(&[("range", "bytes=-5")]);
    assert_eq!(
        evaluate(&Method::GET, &suffix, StatusCode::OK, &headers(&[]), 0),
        Answer::Whole
    );
}

#[test]
fn hostile_ranges_are_ignored_or_refused_without_overflow() {
    let huge = format!("bytes={}-", u64::MAX);
    assert_eq!(get(&[("range", &huge)]), Answer::Unsatisfiable);
    let wide = format!("bytes=0-{}", u64::MAX);
    assert_eq!(get(&[("range", &wide)]), Answer::Part(0..=99));
    let suffix = format!("bytes=-{}", u64::MAX);
    assert_eq!(get(&[("range", &suffix)]), Answer::Part(0..=99));
    // Past u64, and past the parser's 30 digits.
    let overflow = "bytes=0-99999999999999999999999";
    assert!(matches!(
        get(&[("range", overflow)]),
        Answer::Whole | Answer::Part(_)
    ));
    let endless = format!("bytes=0-{}", "9".repeat(10_000));
    assert_eq!(get(&[("range", &endless)]), Answer::Whole);
    for garbage in [
        "bytes=",
        "bytes=abc",
        "bytes=5-2",
        "bytes=--1",
        "bytes=1-2-3",
        "bytes=+1-2",
        "items=0-1",
        "0-1",
        "bytes 0-1",
        "",
    ] {
        assert_eq!(get(&[("range", garbage)]), Answer::Whole, "{garbage:?}");
    }
    // Opaque bytes in the value.
    let mut asked = HeaderMap::new();
    asked.insert(
        header::RANGE,
        HeaderValue::from_bytes(b"bytes=\xff0-1").unwrap(),
    );
    let stored = headers(&[]);
    assert_eq!(
        evaluate(&Method::GET, &asked, StatusCode::OK, &stored, 10),
        Answer::Whole
    );
}

#[test]
fn several_ranges_get_the_whole_body() {
    assert_eq!(get(&[("range", "bytes=0-1,5-6")]), Answer::Whole);
    assert_eq!(get(&[("range", "bytes=0-1, 200-300")]), Answer::Part(0..=1));
    let many = format!(
        "bytes={}",
        (0..1000)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(get(&[("range", &many)]), Answer::Whole);
    let overlapping = "bytes=0-50,10-60,20-70";
    assert_eq!(get(&[("range", overlapping)]), Answer::Whole);
    // Two Range fields: ignored.
    assert_eq!(
        get(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]),
        Answer::Whole
    );
}

#[test]
fn if_range_must_name_the_entry_exactly() {
    let range = ("range", "bytes=0-9");
    assert_eq!(get(&[range, ("if-range", "\"v1\"")]), Answer::Part(0..=9));
    assert_eq!(get(&[range, ("if-range", LM)]), Answer::Part(0..=9));
    // Another tag, a weak tag, another date (even a later one), garbage: the whole.
    for stale in [
        "\"v0\"",
        "W/\"v1\"",
        "Mon, 07 Nov 1994 08:49:37 GMT",
        "whenever",
    ] {
        assert_eq!(get(&[range, ("if-range", stale)]), Answer::Whole, "{stale}");
    }
    // A weak stored ETag never satisfies If-Range.
    let weak = headers(&[("etag", "W/\"v1\"")]);
    let asked = headers(&[range, ("if-range", "\"v1\"")]);
    assert_eq!(
        evaluate(&Method::GET, &asked, StatusCode::OK, &weak, 100),
        Answer::Whole
    );
    // Without Range, If-Range means nothing.
    assert_eq!(get(&[("if-range", "\"v0\"")]), Answer::Whole);
}
