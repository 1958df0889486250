//! Running the library over a dataset on disk: the parallel profiling loop shared by the CLI
//! (`plinth data profile`) and the server (profiles of registered dataset versions).

use std::path::Path;

use crate::profile::{DatasetProfile, DatasetProfiler};
use crate::read::{Dataset, ReadError, ReadOptions};

/// Profiles the dataset at `path` (a Parquet, CSV, gzip CSV or Arrow IPC file, or a folder of
/// them), one profiler per unit of work (Parquet row group, file) spread over at most
/// `workers` threads (`0`: one per available core), merged in a fixed order so the result does
/// not depend on scheduling. Errors name the file, row group and column as the reader does.
pub fn profile_path(path: &Path, workers: usize) -> Result<DatasetProfile, String> {
    let ds = Dataset::open(path).map_err(|e| e.to_string())?;
    let schema = ds.schema().map_err(|e| e.to_string())?;
    let units = ds.units().map_err(|e| e.to_string())?;
    let opts = ReadOptions::default();
    let wanted = if workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        workers
    };
    let workers = wanted.min(units.len()).max(1);
    let results: Vec<Result<DatasetProfiler, ReadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (ds, schema, units, opts) = (&ds, &schema, &units, &opts);
                s.spawn(move || {
                    let mut total = DatasetProfiler::new(schema).with_seed(w as u64);
                    for (i, unit) in units.iter().enumerate().skip(w).step_by(workers) {
                        let mut p = DatasetProfiler::new(schema).with_seed(i as u64 + 1);
                        ds.read_unit(unit, opts, &mut |b| {
                            p.update(b).map_err(|e| ReadError::Callback(e.to_string()))
                        })?;
                        total.merge(p);
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ReadError::Callback("profiling worker panicked".into()))
                })
            })
            .collect()
    });
    let mut total = DatasetProfiler::new(&schema);
    for r in results {
        total.merge(r.map_err(|e| e.to_string())?);
    }
    Ok(total.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::profile_path;

    #[test]
    fn profiles_a_folder_the_same_with_one_or_many_workers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "x,c\n1,a\n2,b\n3,a\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), "x,c\n10,b\n,a\n").unwrap();
        let one = profile_path(dir.path(), 1).unwrap();
        let many = profile_path(dir.path(), 4).unwrap();
        assert_eq!(one.rows, 5);
        let x = one.column("x").unwrap();
        assert_eq!((x.nulls, x.min, x.max), (1, Some(1.0), Some(10.0)));
        assert_eq!(one.rows, many.rows);
        assert_eq!(one.column("x").unwrap().max, many.column("x").unwrap().max);
        assert_eq!(
            one.column("c").unwrap().top_k,
            many.column("c").unwrap().top_k
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.csv");
        let err = profile_path(&missing, 2).unwrap_err();
        assert!(err.contains("nope.csv"), "{err}");
    }
}
