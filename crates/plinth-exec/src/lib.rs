//! The local executor: runs job attempts as real processes on this machine.
//!
//! Each attempt runs under a small **supervisor** process (the function [`supervisor::main`],
//! shipped as the `plinth-exec-supervisor` binary and meant to be embedded in the `plinth`
//! binary as a hidden subcommand). The supervisor
//!
//! * starts the command in its own process group and working directory, with
//!   `CUDA_VISIBLE_DEVICES` and the `PLINTH_*` variables set (see [`AttemptSpec`]);
//! * copies stdout and stderr into size-capped files (the first `log_cap_bytes` are kept, the
//!   rest is read and dropped, so the cap holds for a process that writes forever);
//! * samples the CPU use of the whole process group from `/proc` (and GPU utilization through
//!   `nvidia-smi` when an NVIDIA driver is present), enforces the maximum run time and the idle
//!   timeout, and carries out stop requests: SIGTERM to the group, SIGKILL after the grace;
//! * when the command ends, writes the attempt's [`Outcome`] (exit code or signal, end reason,
//!   usage) durably and appends its [`UsageRecord`] to the usage file under the root.
//!
//! The supervisor is not tied to the server process: it runs in its own process group, and all
//! state lives in files under the executor root, so a server that dies and restarts loses no
//! attempt. [`Executor::recover`] adopts attempts whose supervisor still runs (checked by pid and
//! the kernel's start time, so a reused pid is never mistaken for the attempt), reports those
//! that finished while the server was away, and marks the rest lost.
//!
//! The API is blocking and quick (file reads, `kill(2)`); an async server calls it from
//! `spawn_blocking` or polls [`Executor::status`] and [`Executor::read_log`] on a timer.
//!
//! Linux only: it reads `/proc` and signals process groups.

mod error;
mod files;
mod gpu;
mod procfs;
pub mod supervisor;
mod types;

mod executor;

pub use error::ExecError;
pub use executor::{Executor, SupervisorProgram};
pub use types::{
    AttemptId, AttemptSpec, AttemptStatus, EndReason, ExitKind, GpuSlot, IdlePolicy, LogChunk,
    LogInfo, LogStream, Outcome, PodInfo, Recovered, RecoveredState, RunningAttempt, Snapshot,
    StopReason, StopRequest, UsageRecord,
};

pub use plinth_types::spec::Procurement;

/// True when an NVIDIA driver (`libnvidia-ml.so.1` and `nvidia-smi`) is present, so GPU
/// utilization and memory can be sampled. Without one, a pool on this machine is a CPU pool.
pub fn nvidia_driver_present() -> bool {
    gpu::GpuProbe::detect().is_some()
}
