//! GPU utilization and memory through `nvidia-smi`, only when an NVIDIA driver is present.
//!
//! Not exercised on machines without an NVIDIA GPU: there [`GpuProbe::detect`] finds no driver
//! and every GPU reading is `None` (the pool behaves as a CPU pool). Only the parser is tested
//! everywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/cuda/lib64",
];

const NVML: &str = "libnvidia-ml.so.1";

const SMI_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/local/bin",
    "/usr/local/nvidia/bin",
    "/bin",
];

#[derive(Debug, Clone)]
pub(crate) struct GpuProbe {
    smi: PathBuf,
}

/// One GPU's reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GpuReading {
    pub index: u32,
    pub util_pct: f64,
    pub memory_mib: f64,
}

impl GpuProbe {
    /// Finds `nvidia-smi` when NVML (`libnvidia-ml.so.1`) is installed.
    pub fn detect() -> Option<Self> {
        let has_nvml = LIB_DIRS
            .iter()
            .any(|d| Path::new(d).join("libnvidia-ml.so.1").exists())
            || std::fs::read("/etc/ld.so.cache")
                .is_ok_and(|cache| cache.windows(NVML.len()).any(|w| w == NVML.as_bytes()));
        if !has_nvml {
            return None;
        }
        let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain(SMI_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join("nvidia-smi"))
            .find(|p| p.is_file())
            .map(|smi| Self { smi })
    }

    /// Readings of all GPUs; `None` when `nvidia-smi` fails.
    pub fn sample(&self) -> Option<Vec<GpuReading>> {
        let out = Command::new(&self.smi)
            .args([
                "--query-gpu=index,utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(parse_smi(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Parses `index, util, memory` lines; lines that do not parse (e.g. `[N/A]`) are skipped.
pub(crate) fn parse_smi(text: &str) -> Vec<GpuReading> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split(',').map(str::trim);
            Some(GpuReading {
                index: it.next()?.parse().ok()?,
                util_pct: it.next()?.parse().ok()?,
                memory_mib: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_smi_csv() {
        let r = parse_smi("0, 97, 40123\n1, 3, 512\n2, [N/A], [N/A]\n");
        assert_eq!(
            r,
            vec![
                GpuReading {
                    index: 0,
                    util_pct: 97.0,
                    memory_mib: 40123.0
                },
                GpuReading {
                    index: 1,
                    util_pct: 3.0,
                    memory_mib: 512.0
                },
            ]
        );
    }
}
