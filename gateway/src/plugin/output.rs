//! A plugin's stdout and stderr: each line goes to the gateway's log (target
//! `weir::plugin`, tagged with the plugin), under the same per-plugin rate limit as the
//! `log` import. Lines are capped at 4 KiB; a guest can never block on its output.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::state::PluginContext;

/// The longest line a plugin gets into the log (stdout, stderr or `host.log`); the rest
/// of a longer one is cut.
pub(super) const MAX_LINE: usize = 4096;

/// Which stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The `StdoutStream` given to an instance's WASI context.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) stream: Stream,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            output: self.clone(),
            line: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the WASIp2 stream above is used by `weir:plugin` guests.
        Box::new(tokio::io::sink())
    }
}

struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        let ctx = &self.output.ctx;
        if !ctx.may_log() {
            return;
        }
        let (plugin, version) = (&ctx.name, ctx.short_version());
        match self.output.stream {
            Stream::Stdout => {
                tracing::info!(target: "weir::plugin", plugin, version, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "weir::plugin", plugin, version, stream = "stderr", "{text}")
            }
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for &byte in bytes.iter() {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}
