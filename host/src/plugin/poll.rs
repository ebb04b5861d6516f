//! The host side of `wasi:io/poll` for plugins: WASI's own, bounded by the call's deadline.
//! It owns nothing but that bound; what a pollable waits for is WASI's business.
//!
//! Why here: the epoch deadline (see `engine.rs`) interrupts Wasm code only. A plugin that
//! sleeps (`std::thread::sleep`: `monotonic-clock.subscribe-duration`, then
//! `pollable.block`) or polls a timer (`poll`) waits inside the host, where no epoch check
//! runs, for as long as it asked: floe would hang on it. Every wait of a sandboxed plugin ends
//! in `poll` or `pollable.block` (no files or network: timers and stdio are all it can wait
//! on), so bounding those two bounds them all. A wait still running at the deadline traps with
//! [`Trap::Interrupt`], the trap of an overrun epoch deadline, so it is reported and handled
//! exactly like a busy loop (a fault, the instance discarded).
//!
//! The alternatives cost more: async calls under a timeout would make every call async (a
//! fiber per call, async bindings), and refusing sleeps longer than the time left would also
//! refuse a legitimate `poll` whose long timer only guards other pollables.
//!
//! Without the `clock` grant the plugin's clocks are frozen at the Unix epoch, but timers are
//! not: `subscribe-duration` waits that long in real time, and `subscribe-instant` waits
//! `instant - now()` with `now()` at 0. Either way the wait is bounded here; a plugin that
//! loops until its frozen clock moves spins in Wasm code, where the epoch deadline stops it.

use std::future::Future;
use std::time::Instant;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime::Trap;
use wasmtime_wasi::p2::bindings::io::poll as wasi_poll;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::runtime::in_tokio;

/// Links [`DeadlinePollView`] as `wasi:io/poll`, over WASI's own (already linked).
pub(super) struct DeadlinePoll;

impl HasData for DeadlinePoll {
    type Data<'a> = DeadlinePollView<'a>;
}

/// A plugin's resources and the end of its current call.
pub(super) struct DeadlinePollView<'a> {
    pub table: &'a mut ResourceTable,
    /// When the running call must end; `None`: no bound (a deadline too far to represent).
    pub deadline: Option<Instant>,
}

/// Waits for `wait` until `deadline`, then traps as an overrun epoch deadline does. A wait that
/// is already over returns its result even past the deadline (the timeout polls it first);
/// the next epoch check in Wasm code then traps.
fn until<T>(
    deadline: Option<Instant>,
    wait: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let Some(deadline) = deadline else {
        return in_tokio(wait);
    };
    in_tokio(async move {
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Trap::Interrupt.into()),
        }
    })
}

impl sync_poll::Host for DeadlinePollView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        until(
            self.deadline,
            wasi_poll::Host::poll(&mut *self.table, pollables),
        )
    }
}

impl sync_poll::HostPollable for DeadlinePollView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Does not wait: it only asks.
        in_tokio(wasi_poll::HostPollable::ready(&mut *self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        until(
            self.deadline,
            wasi_poll::HostPollable::block(&mut *self.table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        wasi_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
