//! Bodies stream through the real `weir` binary in both directions: a 1 GiB upload and a
//! 1 GiB download pass while the gateway's peak memory stays far below the body size.

use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use weir_tests::client::{ClientBody, empty};
use weir_tests::{TestUpstream, WeirProcess, h1_client, send};

const GIB: u64 = 1024 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
/// Far below 1 GiB, far above what a streaming gateway needs (a few MiB of buffers).
const PEAK_RSS_LIMIT_KIB: u64 = 128 * 1024;

/// A body of `total` bytes made of one shared chunk: the client holds no copy of it.
fn generated_body(total: u64) -> ClientBody {
    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    let frames =
        (0..total / CHUNK as u64).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone())));
    StreamBody::new(stream::iter(frames)).boxed()
}

fn start(up: &TestUpstream) -> WeirProcess {
    WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\naccess_log = false\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\ntimeouts = {{ request = \"60s\" }}\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n",
            up.addr
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_upload_streams_through() {
    let up = TestUpstream::start("up");
    let weir = start(&up);
    let baseline = weir.peak_rss_kib();
    let req = Request::post(format!("http://{}/upload", weir.addr))
        .body(generated_body(GIB))
        .unwrap();
    let reply = send(&h1_client(), req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        GIB.to_string(),
        "the upstream received every byte"
    );
    let peak = weir.peak_rss_kib();
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "gateway peak RSS {peak} KiB (baseline {baseline} KiB): the body was buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_download_streams_through() {
    let up = TestUpstream::start("up");
    let weir = start(&up);
    let baseline = weir.peak_rss_kib();
    let req = Request::get(format!("http://{}/download/{GIB}", weir.addr))
        .body(empty())
        .unwrap();
    let response = h1_client().request(req).await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("body frame")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, GIB, "the client received every byte");
    let peak = weir.peak_rss_kib();
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "gateway peak RSS {peak} KiB (baseline {baseline} KiB): the body was buffered"
    );
}
