//! The engine every plugin runs on and the sandbox each call gets: an empty
//! WASI (no environment, files or sockets), a memory cap and a deadline.

use super::pool::{InstancePool, Kept, Room};
use super::{PluginError, contract};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError, PoolingAllocationConfig,
    Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How often the epoch advances; plugin deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Address space reserved per memory slot when the machine has it: a 32-bit
/// index plus a small offset cannot reach past it (and its guard), so
/// compiled guest code checks no bounds.
const GUARDED_RESERVATION: u64 = 4 << 30;
/// Unmapped bytes after each memory's reservation: accesses whose static
/// offset is within it need no check either.
const GUARD_BYTES: u64 = 64 * 1024;
/// Linear memory kept resident per pooled slot between instances.
const KEEP_RESIDENT: usize = 4 * 1024 * 1024;
/// How much of a guest's stderr (panic messages) is kept for the error.
const STDERR_CAPTURE: usize = 4096;

/// Limits of the engine, shared by every plugin.
#[derive(Clone, Debug)]
pub struct SandboxLimits {
    /// Linear memory cap per plugin instance.
    pub memory_bytes: usize,
    /// Linear memory of all plugin instances together.
    pub total_memory_bytes: usize,
    /// Plugin instances alive at once (each stream holds one).
    pub max_instances: u32,
    /// Where compiled components are kept between runs (none: compile at
    /// every start).
    pub compile_cache: Option<std::path::PathBuf>,
}

/// State of one plugin store.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryLimiter,
    stderr: MemoryOutputPipe,
    /// When the current call is interrupted (wall clock).
    deadline: std::time::Instant,
    call_timeout: Duration,
    /// The plugin's slow lane: a call still running at an epoch tick holds
    /// (or waits for) one of its places.
    lane: Option<SlowLane>,
    /// Whether this store is counted as running guest code (the ticker ticks
    /// while any is).
    in_wasm: InWasm,
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while plugin code runs,
/// and sleeps once none has run for [`TICKER_IDLE`], so an idle gateway is
/// not woken 500 times a second (and a busy one does not park and wake it
/// between calls). Every call into Wasm (with its instantiation's start
/// function, the `cabi_realloc` calls that lower its arguments, a
/// resource's destructor) starts on a store made or rearmed for it, which
/// counts the store in until the call ends and wakes a sleeping ticker when
/// it is the first.
struct Ticker {
    /// Stores running guest code now (a call suspended at a tick counts).
    running: AtomicUsize,
    /// A store entered Wasm since the ticker last looked.
    entered: AtomicBool,
    /// The ticker is parked, or about to be.
    parked: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

/// Ticks without plugin code after which the ticker sleeps (100 ms).
const TICKER_IDLE: u32 = 50;

impl Ticker {
    fn enter(&self) {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            // Read first: under load the flag is set already, and its cache
            // line stays shared instead of bouncing between cores.
            if !self.entered.load(Ordering::Relaxed) {
                self.entered.store(true, Ordering::Relaxed);
            }
            // With the ticker's store to `parked` and load of `running`, all
            // sequentially consistent: it sees this store, or this sees it
            // parking and wakes it (an `unpark` before its `park` counts).
            if self.parked.load(Ordering::SeqCst) {
                self.wake();
            }
        }
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// The ticker thread: tick while plugin code runs or ran lately, park
    /// once it has not for [`TICKER_IDLE`] ticks, end with the engine.
    fn run(&self, engine: wasmtime::EngineWeak) {
        let mut idle = 0;
        while !self.stop.load(Ordering::Relaxed) {
            if idle >= TICKER_IDLE {
                self.parked.store(true, Ordering::SeqCst);
                if self.running.load(Ordering::SeqCst) == 0 {
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
                idle = 0;
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
            let active =
                self.entered.swap(false, Ordering::Relaxed) || self.running.load(Ordering::SeqCst) > 0;
            idle = if active { 0 } else { idle + 1 };
        }
    }
}

/// Whether a store is counted among those running guest code: from when
/// it is made or rearmed for a call ([`PluginRuntime::store`],
/// [`PluginRuntime::rearm`]; every entry into its guest comes after one)
/// until the call ends ([`PluginRuntime::end_call`]) or the store is dropped
/// (its call's future dropped mid-call). Counted per call, not per entry
/// into Wasm: a call hook ran at each of a call's dozens of entries (one
/// per string lowered into the guest), 1.4 % of a JSON request's
/// instructions.
struct InWasm {
    counted: bool,
    ticker: Arc<Ticker>,
}

impl InWasm {
    fn call_starts(&mut self) {
        if !self.counted {
            self.ticker.enter();
            self.counted = true;
        }
    }

    fn call_ended(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.ticker.leave();
        }
    }
}

impl Drop for InWasm {
    fn drop(&mut self) {
        self.call_ended();
    }
}

/// A bound on one plugin's calls that run longer than an epoch tick: a
/// call that goes on past a tick takes a place, or waits (within its own
/// deadline) for one. Fast calls never yield and never touch it, so a
/// looping or slow plugin holds at most this many workers however many of
/// its calls are in progress.
#[derive(Clone)]
pub struct SlowLane {
    places: Arc<Semaphore>,
    /// The place this store's call holds, if any.
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl SlowLane {
    pub fn new(places: &Arc<Semaphore>) -> SlowLane {
        SlowLane {
            places: places.clone(),
            held: Arc::new(Mutex::new(None)),
        }
    }

    /// What the epoch callback does for a call still running.
    fn on_tick(&self, deadline: std::time::Instant) -> UpdateDeadline {
        let mut held = self.held.lock().unwrap();
        if held.is_some() {
            return UpdateDeadline::Yield(1);
        }
        if let Ok(place) = self.places.clone().try_acquire_owned() {
            *held = Some(place);
            return UpdateDeadline::Yield(1);
        }
        let (places, slot) = (self.places.clone(), self.held.clone());
        let wait = async move {
            let deadline = tokio::time::Instant::from_std(deadline);
            if let Ok(Ok(place)) = tokio::time::timeout_at(deadline, places.acquire_owned()).await {
                *slot.lock().unwrap() = Some(place);
            }
        };
        UpdateDeadline::YieldCustom(1, Box::pin(wait))
    }

    fn release(&self) {
        self.held.lock().unwrap().take();
    }
}

/// Gives back a long-lived store's slow-lane place when the call ends,
/// however it ends (returned, trapped, or dropped mid-call by a timeout).
pub struct LaneGuard(Option<Arc<Mutex<Option<OwnedSemaphorePermit>>>>);

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if let Some(held) = &self.0 {
            held.lock().unwrap().take();
        }
    }
}

/// Bounds one store's linear memory, and all stores' together.
struct MemoryLimiter {
    instance_max: usize,
    total_max: usize,
    /// Bytes of linear memory held by every live store.
    total: Arc<AtomicUsize>,
    /// The most `total` has been.
    peak: Arc<AtomicUsize>,
    /// What kept instances hold is let go before a growth is refused.
    kept: Arc<Kept>,
    /// This store's share of `total`, returned when it is dropped.
    mine: usize,
    /// A growth was refused because all plugins together hold the budget.
    starved: bool,
}

impl MemoryLimiter {
    /// Count `delta` more bytes as this store's, if all plugins together
    /// stay within the budget; else how many bytes are missing.
    fn reserve(&mut self, delta: usize) -> Result<(), usize> {
        let before = self.total.fetch_add(delta, Ordering::Relaxed);
        if before + delta > self.total_max {
            self.total.fetch_sub(delta, Ordering::Relaxed);
            return Err(before + delta - self.total_max);
        }
        self.mine += delta;
        self.peak.fetch_max(before + delta, Ordering::Relaxed);
        Ok(())
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growth the module's own maximum forbids fails without being counted.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if desired > self.instance_max {
            return Err(wasmtime::format_err!(
                "the plugin's memory would grow past its limit of {} MiB",
                self.instance_max >> 20
            ));
        }
        let delta = desired.saturating_sub(current);
        // Instances kept idle give back what is missing first.
        let reserved = self.reserve(delta).or_else(|missing| {
            if !self.kept.release(Room::Bytes(missing)) {
                return Err(missing);
            }
            self.reserve(delta)
        });
        if reserved.is_ok() {
            return Ok(true);
        }
        // Not this plugin's fault: others hold the budget.
        self.starved = true;
        Err(wasmtime::format_err!(
            "plugins together would hold more than plugins.total_memory_mib ({} MiB)",
            self.total_max >> 20
        ))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growth the module's own maximum forbids fails without being counted.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        Ok(desired <= 100_000)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.total.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

impl Sandbox {
    /// Fit for another call: the guest wrote nothing to stderr (a panic
    /// message says something went wrong) and its memory is no more than a
    /// fresh slot keeps resident.
    pub fn reusable(&self) -> bool {
        self.limits.mine <= KEEP_RESIDENT && !self.limits.starved && self.stderr.contents().is_empty()
    }

    /// The linear memory this instance holds of `total_memory_mib`.
    pub fn memory_held(&self) -> usize {
        self.limits.mine
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The plugin compile cache in `dir`, or none (with a warning) when it
/// cannot be used.
fn compile_cache(dir: &std::path::Path) -> Option<wasmtime::Cache> {
    wasmtime::Cache::new(cache_config(dir))
        .inspect_err(|error| {
            tracing::warn!(dir = %dir.display(), error = %format!("{error:#}"), "plugin compile cache unusable; compiling at every start")
        })
        .ok()
}

/// The compile cache in `dir`. Left to its defaults, wasmtime's cache
/// recompresses a compiled plugin at zstd level 20 once it has been read
/// 256 times (that many starts, or reloads, share a cache): in a serving
/// gateway's background thread, a burst of CPU and some 160 MiB more
/// resident memory (the overhead bench caught one at 215 MiB). The few
/// MiB it would save on disk are not worth that: never.
fn cache_config(dir: &std::path::Path) -> wasmtime::CacheConfig {
    let mut cache = wasmtime::CacheConfig::new();
    cache
        .with_directory(dir)
        .with_optimized_compression_usage_counter_threshold(u64::MAX);
    cache
}

/// How the guests' loads and stores are kept inside their memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBounds {
    /// By unmapped pages around each memory: no check in the code.
    GuardPages,
    /// By a check before every access (the address space for guard pages
    /// could not be reserved).
    Checked,
}

impl MemoryBounds {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryBounds::GuardPages => "guard_pages",
            MemoryBounds::Checked => "checked",
        }
    }
}

/// The shared engine and linker, plus the epoch ticker that enforces deadlines.
pub struct PluginRuntime {
    engine: Engine,
    memory_bounds: MemoryBounds,
    linker: Linker<Sandbox>,
    limits: SandboxLimits,
    /// Linear memory held by all plugin instances now, and at most so far.
    memory_in_use: Arc<AtomicUsize>,
    memory_peak: Arc<AtomicUsize>,
    ticker: Arc<Ticker>,
    /// Every plugin version's pool of kept instances, so that they can be
    /// let go when a call needs their slots or memory.
    kept: Arc<Kept>,
}

impl PluginRuntime {
    pub fn new(limits: SandboxLimits) -> wasmtime::Result<Self> {
        // Each memory's slot reserves 4 GiB of address space (never memory:
        // what a plugin may grow to is still `memory_bytes`), so the guest's
        // loads and stores need no bounds check: out-of-bounds accesses
        // land on unmapped pages and trap. With checks the guests ran a
        // third more instructions (callgrind: 8 % of a JSON request's
        // instructions, 7 % of a stream's). Where the address space is not
        // there (a `ulimit -v`, valgrind, a very large `max_instances`), the
        // slots are as large as the cap and the code checks bounds.
        let cache = limits.compile_cache.as_deref().and_then(compile_cache);
        let guarded = GUARDED_RESERVATION.max(limits.memory_bytes as u64);
        let (engine, reservation) = match Self::engine(&limits, guarded, cache.clone()) {
            Ok(engine) => (engine, guarded),
            Err(error) => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "cannot reserve 4 GiB of address space per plugin memory; plugins run with explicit bounds checks (a third more instructions)"
                );
                let reservation = limits.memory_bytes as u64;
                (Self::engine(&limits, reservation, cache)?, reservation)
            }
        };
        let memory_bounds = if reservation + GUARD_BYTES >= 1 << 32 {
            MemoryBounds::GuardPages
        } else {
            MemoryBounds::Checked
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;

        let ticker = Arc::new(Ticker {
            running: AtomicUsize::new(0),
            entered: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let (weak_engine, ticking) = (engine.weak(), ticker.clone());
        let thread = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || ticking.run(weak_engine))
            .expect("spawn epoch ticker");
        let _ = ticker.thread.set(thread.thread().clone());
        Ok(PluginRuntime {
            engine,
            memory_bounds,
            linker,
            limits,
            memory_in_use: Arc::new(AtomicUsize::new(0)),
            memory_peak: Arc::new(AtomicUsize::new(0)),
            ticker,
            kept: Arc::new(Kept::default()),
        })
    }

    /// A pool of at most `capacity` kept instances, which gives them up
    /// when a fresh instance of any plugin finds no free slot, or a
    /// plugin's memory would grow past `total_memory_mib`.
    pub fn pool<I: Send + 'static>(&self, capacity: usize) -> Arc<InstancePool<I>> {
        self.kept.pool(capacity)
    }

    /// A fresh instance of plugin `plugin`, made by `make` in a store from
    /// `store`. When every slot of `max_instances` is taken and an
    /// instance kept idle (by any plugin) holds one, it is let go and this
    /// tried again; up to three times, as a call in flight may take the
    /// slot let go first.
    pub async fn instantiate<T, F>(
        &self,
        plugin: &str,
        store: impl Fn() -> Store<Sandbox>,
        make: impl Fn(Store<Sandbox>) -> F,
    ) -> Result<(Store<Sandbox>, T), PluginError>
    where
        F: Future<Output = (Store<Sandbox>, wasmtime::Result<T>)>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let (store, made) = make(store()).await;
            let error = match made {
                Ok(instance) => return Ok((store, instance)),
                Err(error) => error,
            };
            let no_slot = error.downcast_ref::<PoolConcurrencyLimitError>().is_some();
            if !no_slot || tries >= 3 || !self.kept.release(Room::Slot) {
                return Err(self.instantiate_error(plugin, &store, error));
            }
        }
    }

    /// The engine, with a pool of `max_instances` instances whose memory
    /// slots each reserve `reservation` bytes of address space.
    fn engine(
        limits: &SandboxLimits,
        reservation: u64,
        cache: Option<wasmtime::Cache>,
    ) -> wasmtime::Result<Engine> {
        let mut pool = PoolingAllocationConfig::new();
        let instances = limits.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_memories_per_component(4)
            .max_memory_size(limits.memory_bytes)
            // Every call gets a fresh instance, so slot reuse is the hot path:
            // reset the pages a call touched with memset (found by PAGEMAP_SCAN
            // where the kernel has it) instead of madvise, which costs a page
            // fault per page on the next call and a TLB shootdown per reset.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 * 1024)
            .async_stack_keep_resident(64 * 1024)
            // What an instance grew beyond `KEEP_RESIDENT` is returned to the
            // system when it is dropped, not batched: a batch held back the
            // pages of up to 32 dropped instances, so `total_memory_mib` did
            // not bound the resident memory (the bulkhead test caught it).
            // Calls that stay within `KEEP_RESIDENT` decommit nothing.
            .decommit_batch_size(1);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .memory_reservation(reservation)
            .memory_guard_size(GUARD_BYTES)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Keyed by the component's bytes and the engine's settings (these
        // included): a changed plugin or a new wasmtime is compiled afresh.
        config.cache(cache);
        // For profiling plugins: their compiled functions named, by the
        // names the component carries, in `/tmp/perf-<pid>.map`, where
        // `perf report` (and the instructions bench) read them.
        if std::env::var_os("SWITCHBOARD_WASM_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        Engine::new(&config)
    }

    /// How the guests' memory accesses are kept in bounds.
    pub fn memory_bounds(&self) -> MemoryBounds {
        self.memory_bounds
    }

    /// Compile a component, check it exports `interface` of this contract
    /// version, and resolve its imports against the sandbox.
    pub async fn prepare(
        &self,
        bytes: Vec<u8>,
        interface: &str,
    ) -> Result<(InstancePre<Sandbox>, contract::Version), String> {
        let component = self
            .compile(bytes)
            .await
            .map_err(|e| format!("not a valid Wasm component: {e:#}"))?;
        let version = contract::check(&self.engine, &component, interface)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("it needs imports the sandbox does not provide: {e:#}"))?;
        Ok((pre, version))
    }

    /// Compile off the async runtime: it takes tens to hundreds of milliseconds.
    async fn compile(&self, bytes: Vec<u8>) -> wasmtime::Result<Component> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| wasmtime::Error::msg(format!("compilation did not finish: {e}")))?
    }

    /// Linear memory held by all plugin instances now, in bytes.
    pub fn memory_in_use(&self) -> usize {
        self.memory_in_use.load(Ordering::Relaxed)
    }

    /// The most linear memory all plugin instances have held at once.
    pub fn memory_peak(&self) -> usize {
        self.memory_peak.load(Ordering::Relaxed)
    }

    /// A fresh store for one plugin call (or one stream), with the memory
    /// caps and a `call_timeout` deadline armed. Calls run on the async
    /// runtime: a long call yields at every epoch tick and is interrupted
    /// once its deadline has passed in wall-clock time (not in ticks, which
    /// a task waiting for a busy worker would spend without running), so even
    /// a looping plugin never holds a worker thread or outlives its budget.
    pub fn store(&self, call_timeout: Duration, lane: Option<SlowLane>) -> Store<Sandbox> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = MemoryLimiter {
            instance_max: self.limits.memory_bytes,
            total_max: self.limits.total_memory_bytes,
            total: self.memory_in_use.clone(),
            peak: self.memory_peak.clone(),
            kept: self.kept.clone(),
            mine: 0,
            starved: false,
        };
        let sandbox = Sandbox {
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
            deadline: std::time::Instant::now() + call_timeout,
            call_timeout,
            lane,
            in_wasm: InWasm {
                counted: false,
                ticker: self.ticker.clone(),
            },
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.limits);
        store.data_mut().in_wasm.call_starts();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let sandbox = ctx.data();
            if std::time::Instant::now() >= sandbox.deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(match &sandbox.lane {
                Some(lane) => lane.on_tick(sandbox.deadline),
                None => UpdateDeadline::Yield(1),
            })
        });
        store
    }

    /// Re-arm the deadline before another call on a long-lived store.
    pub fn rearm(&self, store: &mut Store<Sandbox>, call_timeout: Duration) {
        let sandbox = store.data_mut();
        if let Some(lane) = &sandbox.lane {
            lane.release();
        }
        sandbox.call_timeout = call_timeout;
        sandbox.deadline = std::time::Instant::now() + call_timeout;
        sandbox.in_wasm.call_starts();
        store.set_epoch_deadline(1);
    }

    /// A store's call has ended: give back its slow-lane place, and count it
    /// out of the stores running guest code.
    pub fn end_call(&self, store: &mut Store<Sandbox>) {
        let sandbox = store.data_mut();
        if let Some(lane) = &sandbox.lane {
            lane.release();
        }
        sandbox.in_wasm.call_ended();
    }

    /// For a call on a long-lived store: gives back its slow-lane place
    /// when dropped.
    pub fn lane_guard(&self, store: &Store<Sandbox>) -> LaneGuard {
        LaneGuard(store.data().lane.as_ref().map(|lane| lane.held.clone()))
    }

    /// Turn a failed instantiation into a typed plugin error: a start
    /// function that trapped or ran out of time is the plugin's own failure
    /// (and counts towards quarantine); anything else (no free pool slot,
    /// say) is the host's.
    fn instantiate_error(&self, plugin: &str, store: &Store<Sandbox>, error: wasmtime::Error) -> PluginError {
        if error.downcast_ref::<Trap>().is_some() || store.data().limits.starved {
            return self.call_error(plugin, store, error);
        }
        PluginError::Instantiate {
            plugin: plugin.to_string(),
            detail: format!("{error:#}"),
        }
    }

    /// Turn a wasmtime failure of a call into a typed plugin error.
    pub fn call_error(&self, plugin: &str, store: &Store<Sandbox>, error: wasmtime::Error) -> PluginError {
        if store.data().limits.starved {
            return PluginError::MemoryBudget {
                plugin: plugin.to_string(),
                limit_mib: self.limits.total_memory_bytes >> 20,
            };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return PluginError::Deadline {
                plugin: plugin.to_string(),
                limit_ms: store.data().call_timeout.as_millis() as u64,
            };
        }
        let stderr = store.data().stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        let mut detail = format!("{error:#}");
        if !stderr.is_empty() {
            detail = format!("{detail}; guest stderr: {stderr}");
        }
        PluginError::Trap {
            plugin: plugin.to_string(),
            detail,
        }
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        self.ticker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_instances_are_let_go_only_as_many_as_make_the_room() {
        let runtime = PluginRuntime::new(SandboxLimits {
            memory_bytes: 64 << 20,
            total_memory_bytes: 256 << 20,
            max_instances: 8,
            compile_cache: None,
        })
        .unwrap();
        let (first, second) = (runtime.pool::<()>(4), runtime.pool::<()>(4));
        for pool in [&first, &second] {
            for _ in 0..3 {
                pool.put(runtime.store(Duration::from_secs(1), None), ());
            }
        }
        // A slot: one instance, from one pool.
        assert!(runtime.kept.release(Room::Slot));
        assert_eq!(first.idle() + second.idle(), 5);
        // Bytes these (empty) stores do not hold: every one, and then no more.
        assert!(runtime.kept.release(Room::Bytes(1)));
        assert_eq!(first.idle() + second.idle(), 0);
        assert!(!runtime.kept.release(Room::Slot));
    }

    #[test]
    fn the_compile_cache_never_recompresses_what_it_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let config = cache_config(dir.path());
        assert_eq!(config.optimized_compression_usage_counter_threshold(), u64::MAX);
        assert!(compile_cache(dir.path()).is_some());
    }
}
