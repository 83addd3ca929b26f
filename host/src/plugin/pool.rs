//! Instances kept between calls of a plugin that declares itself
//! stateless: the next call reuses one instead of instantiating afresh.
//! Only an instance whose call returned normally goes back, and only while
//! it is small and silent (no trap, no timeout, no stderr, memory within
//! what a fresh slot keeps resident anyway); the pool holds at most twice
//! as many as there are cores (calls run on that many workers), and never
//! more than 16, so what it keeps resident stays small.

use super::PluginError;
use super::sandbox::{PluginRuntime, Sandbox};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::Store;

pub struct InstancePool<I> {
    idle: Mutex<Vec<(Store<Sandbox>, I)>>,
    capacity: usize,
    reused: AtomicU64,
}

/// Idle instances a plugin version keeps: twice the cores, at least 4 and
/// at most 16 (each holds a pooled slot of `max_instances`).
pub fn capacity() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).clamp(4, 16)
}

/// What letting kept instances go must make room for.
#[derive(Clone, Copy, Debug)]
pub enum Room {
    /// One slot of `max_instances`.
    Slot,
    /// This many bytes of `total_memory_mib`.
    Bytes(usize),
}

/// What has been let go so far.
#[derive(Clone, Copy, Debug, Default)]
struct Freed {
    instances: usize,
    bytes: usize,
}

impl Freed {
    fn makes(self, room: Room) -> bool {
        match room {
            Room::Slot => self.instances >= 1,
            Room::Bytes(bytes) => self.bytes >= bytes,
        }
    }
}

/// A pool whose kept instances can be let go, whatever their plugin.
trait Idle: Send + Sync {
    /// Drop kept instances, the most recently kept first, until what is
    /// `freed` (so far, by other pools too) makes `room`; what is freed
    /// then. The stores are dropped outside the pool's lock.
    fn release(&self, room: Room, freed: Freed) -> Freed;
}

impl<I: Send> Idle for InstancePool<I> {
    fn release(&self, room: Room, mut freed: Freed) -> Freed {
        let mut released = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap();
            while !freed.makes(room) {
                let Some(kept) = idle.pop() else { break };
                freed.instances += 1;
                freed.bytes += kept.0.data().memory_held();
                released.push(kept);
            }
        }
        drop(released);
        freed
    }
}

/// Every pool of one runtime, so that what their kept instances hold (a
/// slot of `max_instances`, memory of `total_memory_mib`) can be had back
/// when a call needs it: a kept instance saves an instantiation, and must
/// never cost a call or a start.
#[derive(Default)]
pub struct Kept {
    pools: Mutex<Vec<Weak<dyn Idle>>>,
}

impl Kept {
    /// A pool of at most `capacity` kept instances, registered here.
    pub fn pool<I: Send + 'static>(&self, capacity: usize) -> Arc<InstancePool<I>> {
        let pool = Arc::new(InstancePool::new(capacity));
        let mut pools = self.pools.lock().unwrap();
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(&pool) as Weak<dyn Idle>);
        pool
    }

    /// Let go of kept instances, pool by pool, until they make `room` or
    /// none is left; whether any was. Only as many as it takes: a plugin
    /// that keeps running out of memory must not cost every other plugin
    /// its kept instances each time.
    pub fn release(&self, room: Room) -> bool {
        let pools: Vec<Arc<dyn Idle>> = self
            .pools
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut freed = Freed::default();
        for pool in &pools {
            if freed.makes(room) {
                break;
            }
            freed = pool.release(room, freed);
        }
        if freed.instances > 0 {
            tracing::debug!(?freed, ?room, "kept plugin instances let go to make room");
        }
        freed.instances > 0
    }
}

impl<I> Default for InstancePool<I> {
    fn default() -> Self {
        InstancePool::new(0)
    }
}

impl<I> InstancePool<I> {
    /// A pool of at most `capacity` idle instances (0: never reuse, the
    /// default). One that keeps any is made by [`Kept::pool`], which can
    /// ask for them back.
    fn new(capacity: usize) -> InstancePool<I> {
        InstancePool {
            idle: Mutex::new(Vec::new()),
            capacity,
            reused: AtomicU64::new(0),
        }
    }

    /// An idle instance, if there is one.
    pub fn take(&self) -> Option<(Store<Sandbox>, I)> {
        let taken = self.idle.lock().unwrap().pop();
        if taken.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// A kept instance rearmed for a call of `deadline`, else a fresh one
    /// from `fresh` (not called when one is kept).
    ///
    /// Instantiating is a future of a few KiB, and every call's future
    /// would hold room for it (moved with it, all the way up to the
    /// connection's) though most calls take a kept instance: it is boxed,
    /// only when it runs.
    pub async fn checkout<F>(
        &self,
        runtime: &PluginRuntime,
        deadline: Duration,
        fresh: impl FnOnce() -> F,
    ) -> Result<(Store<Sandbox>, I), PluginError>
    where
        F: Future<Output = Result<(Store<Sandbox>, I), PluginError>>,
    {
        match self.take() {
            Some((mut store, instance)) => {
                runtime.rearm(&mut store, deadline);
                Ok((store, instance))
            }
            None => Box::pin(fresh()).await,
        }
    }

    /// Keep an instance whose call returned normally, if it is fit for
    /// another call and there is room; else it is dropped (its memory
    /// returns to the budget).
    pub fn put(&self, store: Store<Sandbox>, instance: I) {
        if !store.data().reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.capacity {
            idle.push((store, instance));
        }
    }

    /// Whether instances are kept at all.
    pub fn keeps(&self) -> bool {
        self.capacity > 0
    }

    /// Calls served by a kept instance so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Instances kept now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}
