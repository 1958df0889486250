//! Checks that need an NVIDIA driver and GPU 0; ignored elsewhere. Run them on a GPU machine
//! with `cargo nextest run -p plinth-exec --run-ignored only` (the supervisor binary may be
//! given in `PLINTH_EXEC_SUPERVISOR` when the test binary was built elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use plinth_exec::{
    AttemptSpec, AttemptStatus, EndReason, Executor, GpuSlot, IdlePolicy, SupervisorProgram,
};

fn executor(root: &std::path::Path) -> Executor {
    let program = std::env::var_os("PLINTH_EXEC_SUPERVISOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plinth-exec-supervisor").into());
    Executor::new(root, SupervisorProgram::new(program)).expect("executor root")
}

/// A GPU job is judged by its GPUs: a busy CPU loop holding an unused GPU is idle, and its
/// samples carry GPU utilization and memory read through the driver.
#[test]
#[ignore = "needs an NVIDIA driver and GPU 0"]
fn gpu_job_with_an_unused_gpu_is_idle_even_when_its_cpu_is_busy() {
    assert!(
        plinth_exec::nvidia_driver_present(),
        "no NVIDIA driver found"
    );
    let root = tempfile::tempdir().unwrap();
    let ex = executor(root.path());
    let mut spec = AttemptSpec::new(
        "gpu-idle",
        1,
        vec!["sh".into(), "-c".into(), "while :; do :; done".into()],
    );
    spec.gpus = vec![GpuSlot::whole(0)];
    spec.idle = Some(IdlePolicy::after(Duration::from_secs(3)));
    spec.sample_interval = Duration::from_millis(500);
    spec.max_runtime = Some(Duration::from_secs(60));
    let a = ex.start(spec).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        if let AttemptStatus::Running {
            snapshot: Some(s), ..
        } = ex.status(&a.id).unwrap()
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no sample");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("sample: {snapshot:?}");
    let util = snapshot.gpu_util_pct.expect("GPU utilization sampled");
    assert!((0.0..=100.0).contains(&util));
    assert!(snapshot.gpu_memory_mib.expect("GPU memory sampled") >= 0.0);

    let out = ex
        .wait(&a.id, Duration::from_secs(90))
        .unwrap()
        .expect("ended");
    println!("outcome: {out:?}");
    assert_eq!(out.end_reason, EndReason::Idle);
    assert!(out.usage.gpu_seconds > 0.0);
}
