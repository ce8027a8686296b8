//! The quickstart: an embedded config plus a demo upstream served in-process, so
//! `cargo run --release` shows a working gateway with nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::config::{Config, ConfigError};

const CONFIG: &str = include_str!("quickstart.toml");
const PRIVATE_ROUTE: &str = include_str!("quickstart-private.toml");

/// The first-party plugins the quickstart's `/private` route uses, built for
/// `wasm32-wasip2` by the build script (empty when it could not build them).
const PLUGINS: &[(&str, &[u8])] = &[
    (
        "request-id",
        include_bytes!(concat!(env!("OUT_DIR"), "/request-id.wasm")),
    ),
    (
        "api-key",
        include_bytes!(concat!(env!("OUT_DIR"), "/api-key.wasm")),
    ),
];

/// The API key the quickstart's `/private` route accepts.
pub const DEMO_API_KEY: &str = "weir-demo-key";

/// The quickstart config with the demo upstream at `demo` and, when `plugins` names
/// the directory [`install_plugins`] filled, the `/private` route.
pub fn config(demo: SocketAddr, plugins: Option<&Path>) -> Result<Config, ConfigError> {
    let private = match plugins {
        Some(dir) => PRIVATE_ROUTE.replace(
            "{PLUGINS_DIR}",
            &toml::Value::from(dir.to_string_lossy().into_owned()).to_string(),
        ),
        None => String::new(),
    };
    let text = CONFIG
        .replace("{DEMO_UPSTREAM}", &demo.to_string())
        .replace("{PRIVATE_ROUTE}", &private);
    Config::parse(Path::new("<quickstart>"), &text)
}

/// Writes the embedded plugins to `weir/quickstart-plugins` under the OS cache
/// directory (or the temp directory) and returns it; `None` when this binary was built
/// without them.
pub fn install_plugins() -> std::io::Result<Option<PathBuf>> {
    if PLUGINS.iter().any(|(_, bytes)| bytes.is_empty()) {
        return Ok(None);
    }
    let dir = dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("weir")
        .join("quickstart-plugins");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in PLUGINS {
        let path = dir.join(format!("{name}.wasm"));
        // Rewritten only when different, so a second quickstart racing this one never
        // reads a half-written file of the same content.
        if std::fs::read(&path).ok().as_deref() != Some(*bytes) {
            let partial = dir.join(format!(".{name}.wasm.{}", std::process::id()));
            std::fs::write(&partial, bytes)?;
            std::fs::rename(&partial, &path)?;
        }
    }
    Ok(Some(dir))
}

/// Starts the demo upstream on a free loopback port, on its own thread, for the life of
/// the process. It answers every request with a JSON echo of what it received.
pub fn start_demo_upstream() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weir-demo-upstream".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(echo))
                        .into_owned();
                    tokio::spawn(conn);
                }
            });
        })?;
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_len = body.collect().await.map_or(0, |b| b.to_bytes().len());
    let headers: Vec<String> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            format!(
                "    {}: {}",
                json_string(name.as_str()),
                json_string(&String::from_utf8_lossy(value.as_bytes()))
            )
        })
        .collect();
    let text = format!(
        "{{\n  \"upstream\": \"weir demo\",\n  \"method\": {},\n  \"path\": {},\n  \"body_bytes\": {},\n  \"headers\": {{\n{}\n  }}\n}}\n",
        json_string(parts.method.as_str()),
        json_string(&parts.uri.to_string()),
        body_len,
        headers.join(",\n"),
    );
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What to tell a newcomer once the quickstart is listening.
pub fn banner(gateway: SocketAddr, admin: SocketAddr, demo: SocketAddr, plugins: bool) -> String {
    let private = if plugins {
        format!(
            "\nPlugins (request-id, api-key) guard /private:\n  curl -i http://{gateway}/private/hello                              # 401, no key\n  curl -i -H 'x-api-key: {DEMO_API_KEY}' http://{gateway}/private/hello   # 200, consumer demo\n"
        )
    } else {
        "\n(This build has no embedded plugins, so no /private route: the wasm32-wasip2\n target was missing when it was built. `rustup target add wasm32-wasip2` and rebuild.)\n".to_owned()
    };
    format!(
        "\nWeir quickstart is running (no config file given).\n\
         \n  gateway        http://{gateway}\n  admin          http://{admin}\n  demo upstream  http://{demo} (served by this process)\n\
         \nTry:\n  curl -i http://{gateway}/hello\n  curl -i --http2-prior-knowledge http://{gateway}/hello\n  curl -i http://{admin}/healthz\n\
         {private}\nStop with Ctrl-C. Run your own config with: weir run --config weir.toml\n"
    )
}
