use super::*;

use http_body_util::{BodyExt, StreamBody};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_static(value));
    }
    h
}

fn call(content_type: &'static str) -> Option<WebCall> {
    WebCall::of(&headers(&[("content-type", content_type)]))
}

#[test]
fn grpc_web_content_types() {
    let web = call("application/grpc-web").unwrap();
    assert!(!web.text_request && !web.text_response);
    let text = call("Application/gRPC-Web-Text+proto").unwrap();
    assert!(text.text_request && text.text_response);
    assert_eq!(text.format, "+proto");
    assert_eq!(
        call("application/grpc-web+json; charset=utf-8")
            .unwrap()
            .format,
        "+json"
    );
    for not in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-webx",
        "application/grpc-web-textual",
        "text/plain",
    ] {
        assert_eq!(call(not), None, "{not}");
    }
    assert_eq!(WebCall::of(&HeaderMap::new()), None);
    // A binary request may ask for a text response.
    let asked = WebCall::of(&headers(&[
        ("content-type", "application/grpc-web+proto"),
        ("accept", "application/grpc-web-text"),
    ]))
    .unwrap();
    assert!(!asked.text_request && asked.text_response);
}

#[test]
fn the_request_head_becomes_grpc() {
    let mut h = headers(&[
        ("content-type", "application/grpc-web-text+proto"),
        ("content-length", "12"),
        ("x-grpc-web", "1"),
        ("x-user-agent", "grpc-web-javascript/0.1"),
    ]);
    WebCall::of(&h).unwrap().to_grpc_request(&mut h);
    assert_eq!(h["content-type"], "application/grpc+proto");
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["x-user-agent"], "grpc-web-javascript/0.1");
    assert!(!h.contains_key("content-length") && !h.contains_key("x-grpc-web"));
    // A binary body keeps its length.
    let mut h = headers(&[
        ("content-type", "application/grpc-web"),
        ("content-length", "12"),
    ]);
    WebCall::of(&h).unwrap().to_grpc_request(&mut h);
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["content-length"], "12");
}

#[test]
fn trailer_frames_are_flagged_and_length_prefixed() {
    let frame = trailer_frame(&headers(&[("grpc-status", "0"), ("grpc-message", "ok")]));
    let block = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
    assert_eq!(frame[0], 0x80);
    assert_eq!(frame[1..5], (block.len() as u32).to_be_bytes());
    assert_eq!(&frame[5..], block);
}

#[test]
fn text_decodes_across_any_chunk_boundaries() {
    let message: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    // Two flushes, each padded: padding in the middle of the body.
    let encoded = format!(
        "{}{}",
        STANDARD.encode(&message[..401]),
        STANDARD.encode(&message[401..])
    );
    for step in [1, 2, 3, 5, 7, 13, 4096] {
        let mut decoder = TextDecoder::default();
        let mut out = Vec::new();
        for chunk in encoded.as_bytes().chunks(step) {
            out.extend_from_slice(&decoder.decode(chunk).unwrap());
        }
        decoder.finish().unwrap();
        assert_eq!(out, message, "chunks of {step}");
    }
    assert!(decode_text(b"QUJD!").is_err());
    assert!(decode_text(b"QUJ").is_err(), "a cut-off group");
    assert_eq!(decode_text(b"QQ==QUI=").unwrap(), "AAB");
    // The call hears of its body's failure.
    let text = call("application/grpc-web-text").unwrap();
    let mut decoder = text.text_decoder();
    assert!(decoder.decode(b"QUJD").is_ok() && !text.text_failed());
    assert!(decoder.decode(b"QU!D").is_err());
    assert!(text.text_failed());
}

#[tokio::test]
async fn a_response_body_ends_with_its_trailer_frame() {
    let frames = |trailers: HeaderMap| {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01A"))),
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02BC"))),
            Ok(Frame::trailers(trailers)),
        ];
        StreamBody::new(futures_util::stream::iter(frames))
    };
    let trailers = headers(&[("grpc-status", "0")]);
    let response = http::Response::builder()
        .header("content-type", "application/grpc+proto")
        .header("content-length", "13")
        .body(frames(trailers.clone()))
        .unwrap();
    let binary = call("application/grpc-web").unwrap();
    let web = binary.to_web_response(response);
    assert_eq!(web.headers()["content-type"], "application/grpc-web+proto");
    assert!(!web.headers().contains_key("content-length"));
    let collected = web.into_body().collect().await.unwrap();
    assert!(collected.trailers().is_none());
    let mut want = b"\0\0\0\0\x01A\0\0\0\0\x02BC".to_vec();
    want.extend_from_slice(&trailer_frame(&trailers));
    assert_eq!(collected.to_bytes(), want);

    // Text: each chunk base64 on its own.
    let text = call("application/grpc-web-text").unwrap();
    let response = http::Response::new(frames(trailers.clone()));
    let web = text.to_web_response(response);
    assert_eq!(web.headers()["content-type"], "application/grpc-web-text");
    let mut body = web.into_body();
    let mut decoded = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        decoded.extend_from_slice(&decode_text(&data).unwrap());
    }
    assert_eq!(decoded, want);
}

#[tokio::test]
async fn a_response_that_is_not_grpc_passes_untouched() {
    let response = http::Response::builder()
        .status(502)
        .header("content-type", "text/html")
        .header("content-length", "5")
        .body(http_body_util::Full::new(Bytes::from_static(b"oops!")))
        .unwrap();
    let web = call("application/grpc-web-text")
        .unwrap()
        .to_web_response(response);
    assert_eq!(web.headers()["content-type"], "text/html");
    assert_eq!(web.headers()["content-length"], "5");
    assert_eq!(web.into_body().collect().await.unwrap().to_bytes(), "oops!");
}
