//! The one wasmtime `Engine` of the process: component model, async calls, the pooling
//! instance allocator, and epoch interruption driven by a ticker thread (so a phase call
//! that runs past its CPU deadline is cut).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

/// The finest epoch tick, for timeouts of 10 ms and less.
const MIN_TICK: Duration = Duration::from_millis(1);
/// The coarsest epoch tick, and the tick before any plugin is configured.
const MAX_TICK: Duration = Duration::from_millis(10);

/// How often the epoch advances: a tenth of the shortest plugin timeout configured so
/// far, from 1 to 10 ms. Deadlines are checked against the clock when a tick reaches
/// them, so the tick is only their granularity: a call is cut at most a tenth late. A
/// finer tick than that costs every worker a context switch per tick (at 1 ms, about a
/// tenth of a microsecond per request under load).
#[derive(Debug, Clone)]
pub(crate) struct Tick(Arc<AtomicU64>);

impl Tick {
    fn new() -> Tick {
        Tick(Arc::new(AtomicU64::new(micros(MAX_TICK))))
    }

    /// The current tick.
    pub(crate) fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    /// Makes the tick fine enough for `timeout` (it never grows back).
    pub(crate) fn fit(&self, timeout: Duration) {
        let wanted = (timeout / 10).clamp(MIN_TICK, MAX_TICK);
        self.0.fetch_min(micros(wanted), Ordering::Relaxed);
    }

    /// Epoch ticks that make up `timeout` (at least 1, plus one for the partial tick).
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.0.load(Ordering::Relaxed).max(1);
        u64::try_from(timeout.as_micros() / u128::from(tick))
            .unwrap_or(u64::MAX - 1)
            .max(1)
            + 1
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Largest linear memory any plugin may be configured with.
pub(crate) const MAX_MEMORY: u64 = 256 * 1024 * 1024;

/// Set to `1` to have the engine write `/tmp/perf-PID.map`, so that `perf report` names
/// the plugins' compiled functions instead of showing their addresses (bench/README.md).
const PERF_MAP_ENV: &str = "WEIR_PERF_MAP";

/// Instances (with their memories, tables and stacks) the pool holds.
const POOL_SLOTS: u32 = 1000;

/// Set to a smaller number of pool slots to run the gateway under valgrind, which
/// cannot reserve the default pool's address space (a slot is ~4 GiB of reservation).
const POOL_SLOTS_ENV: &str = "WEIR_POOL_SLOTS";

/// The pool's slot count: [`POOL_SLOTS`] unless [`POOL_SLOTS_ENV`] names 1 to that many.
fn pool_slots() -> u32 {
    std::env::var(POOL_SLOTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=POOL_SLOTS).contains(n))
        .unwrap_or(POOL_SLOTS)
}

/// Builds the engine and starts its epoch ticker (which runs as long as the engine).
pub(crate) fn new_engine() -> wasmtime::Result<(Engine, Tick)> {
    let slots = pool_slots();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(2 * slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        .max_memories_per_component(4)
        .max_tables_per_component(4)
        .max_core_instances_per_component(32)
        .max_memory_size(MAX_MEMORY as usize)
        // Keep the first pages of each slot resident: resetting a slot then restores them
        // with memset instead of unmapping them and faulting them back in for the next
        // instance. With PAGEMAP_SCAN (Linux 6.7+) only the pages the instance actually
        // dirtied are reset, so a generous window costs nothing for pages never touched.
        .linear_memory_keep_resident(4 * 1024 * 1024)
        .table_keep_resident(64 * 1024)
        .pagemap_scan(Enabled::Auto)
        // Batch the madvise calls of slot resets instead of one per dropped instance.
        .decommit_batch_size(32);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1") {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;

    let tick = Tick::new();
    let ticker = engine.weak();
    let every = tick.clone();
    std::thread::Builder::new()
        .name("weir-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(every.get());
            }
        })?;
    Ok((engine, tick))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_tenth_of_the_shortest_timeout_within_bounds() {
        let tick = Tick::new();
        assert_eq!(tick.get(), MAX_TICK);
        tick.fit(Duration::from_millis(50));
        assert_eq!(tick.get(), Duration::from_millis(5));
        assert_eq!(tick.deadline_ticks(Duration::from_millis(50)), 11);
        tick.fit(Duration::from_secs(5));
        assert_eq!(tick.get(), Duration::from_millis(5), "it never grows back");
        tick.fit(Duration::from_millis(3));
        assert_eq!(tick.get(), MIN_TICK);
        assert_eq!(tick.deadline_ticks(Duration::from_micros(10)), 2);
    }
}
