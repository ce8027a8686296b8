//! `wasi:io` without waiting, so that plugins are called synchronously.
//!
//! wasmtime runs an instance on a fiber (a stack switch per call) as soon as one of its
//! imports is `async`, and WASI's blocking stream and poll functions are. A plugin never
//! needs to wait on I/O: its only streams are stdout and stderr, which always accept a
//! write (see `output`), and an empty stdin. These versions of those functions do the
//! work when it is ready at once and trap when it would have to wait (a guest sleeping,
//! say), instead of stalling the worker. With them linked over wasmtime-wasi's, a guest
//! that imports nothing else `async` (only `http-call` is) is called without a fiber.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as async_streams;

/// Links `wasi:io/poll` and `wasi:io/streams` over any earlier definition of them.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    // The other WASI interfaces, noting which one a pre-initialising `init` calls.
    super::wasi_calls::add_to_linker(linker)?;
    linker.allow_shadowing(true);
    poll::add_to_linker::<T, Immediate>(linker, |t| Table(t.ctx().table))?;
    streams::add_to_linker::<T, Immediate>(linker, |t| Table(t.ctx().table))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The instance's resource table, seen through the non-waiting functions.
pub(crate) struct Table<'a>(&'a mut ResourceTable);

struct Immediate;

impl HasData for Immediate {
    type Data<'a> = Table<'a>;
}

/// The error a guest gets for an operation that would have to wait.
fn would_block(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "{what} would block: plugins may not wait on I/O or sleep"
    ))
}

/// Runs `future` if it completes without waiting.
fn at_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

impl poll::Host for Table<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once(async_poll::Host::poll(self.0, pollables))
            .ok_or_else(|| would_block("wasi:io/poll.poll"))?
    }
}

impl poll::HostPollable for Table<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Asking never waits: a pollable that is not ready yet says so.
        at_once(async_poll::HostPollable::ready(self.0, pollable)).unwrap_or(Ok(false))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once(async_poll::HostPollable::block(self.0, pollable))
            .ok_or_else(|| would_block("wasi:io/poll.pollable.block"))?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for Table<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(
            match async_streams::Host::convert_stream_error(self.0, err)? {
                async_streams::StreamError::LastOperationFailed(e) => {
                    streams::StreamError::LastOperationFailed(e)
                }
                async_streams::StreamError::Closed => streams::StreamError::Closed,
            },
        )
    }
}

impl streams::HostOutputStream for Table<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        // Dropping waits for a stream's pending work to be cancelled; a stream still
        // busy is simply dropped.
        at_once(async_streams::HostOutputStream::drop(self.0, stream)).unwrap_or(Ok(()))
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        async_streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        async_streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        at_once(async_streams::HostOutputStream::blocking_write_and_flush(
            self.0, stream, bytes,
        ))
        .ok_or_else(|| {
            StreamError::Trap(would_block(
                "wasi:io/streams.output-stream.blocking-write-and-flush",
            ))
        })?
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        at_once(
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len),
        )
        .ok_or_else(|| {
            StreamError::Trap(would_block(
                "wasi:io/streams.output-stream.blocking-write-zeroes-and-flush",
            ))
        })?
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        async_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        async_streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        at_once(async_streams::HostOutputStream::blocking_flush(
            self.0, stream,
        ))
        .ok_or_else(|| {
            StreamError::Trap(would_block("wasi:io/streams.output-stream.blocking-flush"))
        })?
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        async_streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        at_once(async_streams::HostOutputStream::blocking_splice(
            self.0, dst, src, len,
        ))
        .ok_or_else(|| {
            StreamError::Trap(would_block("wasi:io/streams.output-stream.blocking-splice"))
        })?
    }
}

impl streams::HostInputStream for Table<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        at_once(async_streams::HostInputStream::drop(self.0, stream)).unwrap_or(Ok(()))
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        async_streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        at_once(async_streams::HostInputStream::blocking_read(
            self.0, stream, len,
        ))
        .ok_or_else(|| {
            StreamError::Trap(would_block("wasi:io/streams.input-stream.blocking-read"))
        })?
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        at_once(async_streams::HostInputStream::blocking_skip(
            self.0, stream, len,
        ))
        .ok_or_else(|| {
            StreamError::Trap(would_block("wasi:io/streams.input-stream.blocking-skip"))
        })?
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostInputStream::subscribe(self.0, stream)
    }
}
