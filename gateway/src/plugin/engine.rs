//! The one wasmtime `Engine` of the process: component model, async calls, the pooling
//! instance allocator, and epoch interruption driven by a 1 ms ticker thread (so a phase
//! call that runs past its CPU deadline is cut).

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of per-call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest linear memory any plugin may be configured with.
pub(crate) const MAX_MEMORY: u64 = 256 * 1024 * 1024;

/// Builds the engine and starts its epoch ticker (which runs for the process's life).
pub(crate) fn new_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(1000)
        .total_core_instances(2000)
        .total_memories(1000)
        .total_tables(1000)
        .total_stacks(1000)
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
    let engine = Engine::new(&config)?;

    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("weir-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(engine)
}

/// Epoch ticks that make up `timeout` (at least 1, plus one for the partial tick).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}
