//! Which WASI interfaces a guest calls while pre-initialisation watches.
//!
//! A snapshot cannot keep what a WASI call leaves outside linear memory, so a plugin
//! whose `init` makes one is not pre-initialised (see `preinit`). To say which import
//! it was (std's `HashMap` seeding itself from `wasi:random/insecure-seed` is the usual
//! one), every WASI interface a guest can call first is linked again here over
//! wasmtime-wasi's definition, with the same implementation behind an accessor that
//! notes the interface's name. Noting is armed only on the thread running a
//! pre-initialisation's `init`, and costs one thread-local read otherwise. The
//! `wasi:io` interfaces are left out: a guest reaches them only through a stream or
//! pollable another interface handed out first.

use std::cell::RefCell;

use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};

/// At most this many distinct interfaces are noted per watch.
const MAX_NOTED: usize = 8;

thread_local! {
    /// `Some` while a watch is armed on this thread: the interfaces called so far, in
    /// order of first call.
    static NOTED: RefCell<Option<Vec<&'static str>>> = const { RefCell::new(None) };
}

/// Notes a call of `interface` if a watch is armed on this thread.
fn note(interface: &'static str) {
    NOTED.with_borrow_mut(|noted| {
        if let Some(noted) = noted
            && noted.len() < MAX_NOTED
            && !noted.contains(&interface)
        {
            noted.push(interface);
        }
    });
}

/// Runs `future` with a watch armed on this thread and returns its output with the WASI
/// interfaces the guest called meanwhile. Only calls made on this thread are seen, which
/// is every call of a guest's `init` that does not wait (a WASI call never does).
pub(crate) async fn watch<F: Future>(future: F) -> (F::Output, Vec<&'static str>) {
    NOTED.with_borrow_mut(|noted| *noted = Some(Vec::new()));
    let output = future.await;
    let noted = NOTED.with_borrow_mut(Option::take).unwrap_or_default();
    (output, noted)
}

/// Links the WASI interfaces (all but `wasi:io`) again, over wasmtime-wasi's, with
/// accessors that note each call. Call after `wasmtime_wasi::p2::add_to_linker_async`.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{LinkOptions, cli, clocks, filesystem, random, sockets};

    linker.allow_shadowing(true);
    let l = &mut *linker;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, |t| {
        note("wasi:clocks/wall-clock");
        t.clocks()
    })?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, |t| {
        note("wasi:clocks/monotonic-clock");
        t.clocks()
    })?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| {
        note("wasi:random/random");
        t.random()
    })?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| {
        note("wasi:random/insecure");
        t.random()
    })?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| {
        note("wasi:random/insecure-seed");
        t.random()
    })?;
    cli::exit::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/exit");
        t.cli()
    })?;
    cli::environment::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/environment");
        t.cli()
    })?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/stdin");
        t.cli()
    })?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/stdout");
        t.cli()
    })?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/stderr");
        t.cli()
    })?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/terminal-input");
        t.cli()
    })?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/terminal-output");
        t.cli()
    })?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/terminal-stdin");
        t.cli()
    })?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/terminal-stdout");
        t.cli()
    })?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, |t| {
        note("wasi:cli/terminal-stderr");
        t.cli()
    })?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, |t| {
        note("wasi:filesystem/preopens");
        t.filesystem()
    })?;
    filesystem::types::add_to_linker::<T, WasiFilesystem>(l, |t| {
        note("wasi:filesystem/types");
        t.filesystem()
    })?;
    sockets::tcp_create_socket::add_to_linker::<T, WasiSockets>(l, |t| {
        note("wasi:sockets/tcp-create-socket");
        t.sockets()
    })?;
    sockets::udp_create_socket::add_to_linker::<T, WasiSockets>(l, |t| {
        note("wasi:sockets/udp-create-socket");
        t.sockets()
    })?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(l, |t| {
        note("wasi:sockets/instance-network");
        t.sockets()
    })?;
    sockets::network::add_to_linker::<T, WasiSockets>(l, &(&LinkOptions::default()).into(), |t| {
        note("wasi:sockets/network");
        t.sockets()
    })?;
    sockets::ip_name_lookup::add_to_linker::<T, WasiSockets>(l, |t| {
        note("wasi:sockets/ip-name-lookup");
        t.sockets()
    })?;
    sockets::tcp::add_to_linker::<T, WasiSockets>(l, |t| {
        note("wasi:sockets/tcp");
        t.sockets()
    })?;
    sockets::udp::add_to_linker::<T, WasiSockets>(l, |t| {
        note("wasi:sockets/udp");
        t.sockets()
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_noted_only_while_watched_each_once() {
        note("wasi:cli/stdout");
        let ((), noted) = crate::plugin::block_on(watch(async {
            note("wasi:random/insecure-seed");
            note("wasi:cli/stdout");
            note("wasi:random/insecure-seed");
        }));
        assert_eq!(noted, ["wasi:random/insecure-seed", "wasi:cli/stdout"]);
        note("wasi:clocks/wall-clock");
        let ((), noted) = crate::plugin::block_on(watch(async {}));
        assert!(noted.is_empty(), "{noted:?}");
    }
}
