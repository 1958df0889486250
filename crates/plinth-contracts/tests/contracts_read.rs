//! Reader tests: real nycflights13 CSV (gzip and plain), Parquet row groups with projection,
//! Arrow IPC, directories, and corrupt input (truncated Parquet, broken gzip, ragged rows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use plinth_contracts::read::{Dataset, ReadError, ReadOptions};

fn count_rows(ds: &Dataset, opts: &ReadOptions) -> (u64, u64) {
    let mut rows = 0u64;
    let mut batches = 0u64;
    ds.for_each_batch(opts, &mut |b| {
        rows += b.num_rows() as u64;
        batches += 1;
        Ok(())
    })
    .unwrap();
    (rows, batches)
}

/// Ground truth computed independently with Python's csv+gzip modules:
/// flights.csv.gz has 336,776 rows; dep_time is NA in 8,255 of them; tailnum NA in 2,512.
#[test]
fn flights_gzip_csv_reads_with_inferred_types_and_na_nulls() {
    let ds = Dataset::open(&common::data_dir().join("flights.csv.gz")).unwrap();
    let schema = ds.schema().unwrap();
    assert_eq!(schema.fields().len(), 19);
    assert_eq!(
        schema.field_with_name("dep_time").unwrap().data_type(),
        &DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("carrier").unwrap().data_type(),
        &DataType::Utf8
    );
    assert!(matches!(
        schema.field_with_name("time_hour").unwrap().data_type(),
        DataType::Timestamp(_, Some(_))
    ));
    assert_eq!(ds.units().unwrap().len(), 1);
    let opts = ReadOptions {
        columns: Some(vec!["tailnum".into(), "dep_time".into()]),
        ..ReadOptions::default()
    };
    let mut rows = 0usize;
    let mut dep_nulls = 0usize;
    let mut tail_nulls = 0usize;
    ds.for_each_batch(&opts, &mut |b| {
        assert_eq!(b.num_columns(), 2);
        assert_eq!(b.schema().field(0).name(), "tailnum");
        rows += b.num_rows();
        tail_nulls += b.column(0).null_count();
        dep_nulls += b.column(1).null_count();
        Ok(())
    })
    .unwrap();
    assert_eq!(rows, 336_776);
    assert_eq!(dep_nulls, 8_255);
    assert_eq!(tail_nulls, 2_512);
}

#[test]
fn weather_plain_csv_row_count_and_batches() {
    let ds = Dataset::open(&common::data_dir().join("weather.csv")).unwrap();
    let opts = ReadOptions {
        batch_rows: 10_000,
        ..ReadOptions::default()
    };
    let (rows, batches) = count_rows(&ds, &opts);
    assert_eq!(rows, 26_115);
    assert_eq!(batches, 3);
}

fn small_batch(start: i64, n: i64) -> RecordBatch {
    let ids = Int64Array::from_iter_values(start..start + n);
    let names = StringArray::from_iter((start..start + n).map(|i| {
        if i % 10 == 0 {
            None
        } else {
            Some(format!("name-{i}"))
        }
    }));
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(ids) as Arc<dyn Array>),
        ("name", Arc::new(names) as Arc<dyn Array>),
    ])
    .unwrap()
}

#[test]
fn parquet_units_are_row_groups_and_projection_reorders() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data.parquet");
    common::write_parquet(&p, &[small_batch(0, 2500)], 1000);
    let ds = Dataset::open(&p).unwrap();
    let units = ds.units().unwrap();
    assert_eq!(units.len(), 3);
    assert_eq!(units[2].row_group, Some(2));
    assert_eq!(units[2].rows, Some(500));
    let opts = ReadOptions {
        columns: Some(vec!["name".into(), "id".into()]),
        ..ReadOptions::default()
    };
    let mut nulls = 0;
    let mut rows = 0;
    ds.read_unit(&units[1], &opts, &mut |b| {
        assert_eq!(b.schema().field(0).name(), "name");
        nulls += b.column(0).null_count();
        rows += b.num_rows();
        Ok(())
    })
    .unwrap();
    assert_eq!((rows, nulls), (1000, 100));
    let missing = ReadOptions {
        columns: Some(vec!["nope".into()]),
        ..ReadOptions::default()
    };
    let err = ds
        .read_unit(&units[0], &missing, &mut |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err, ReadError::MissingColumn { .. }), "{err}");
    assert!(err.to_string().contains("nope"));
}

#[test]
fn directory_of_parquet_and_ipc_files() {
    let dir = tempfile::tempdir().unwrap();
    common::write_parquet(&dir.path().join("a.parquet"), &[small_batch(0, 100)], 64);
    common::write_parquet(&dir.path().join("b.parquet"), &[small_batch(100, 50)], 64);
    std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.files().len(), 2);
    assert_eq!(ds.units().unwrap().len(), 3);
    assert_eq!(count_rows(&ds, &ReadOptions::default()).0, 150);

    let ipc = dir.path().join("x.arrow");
    common::write_ipc(&ipc, &[small_batch(0, 10), small_batch(10, 5)]);
    let ds = Dataset::open(&ipc).unwrap();
    assert_eq!(ds.schema().unwrap().fields().len(), 2);
    assert_eq!(count_rows(&ds, &ReadOptions::default()), (15, 2));

    // Mixed formats in one directory are refused.
    std::fs::copy(&ipc, dir.path().join("c.arrow")).unwrap();
    let err = Dataset::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("c.arrow"), "{err}");
}

#[test]
fn truncated_parquet_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("whole.parquet");
    common::write_parquet(&p, &[small_batch(0, 5000)], 1000);
    let bytes = std::fs::read(&p).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let ds = Dataset::open(&cut).unwrap();
    let err = ds.units().unwrap_err();
    assert!(err.to_string().contains("cut.parquet"), "{err}");

    // Corrupt a data page in the middle but keep the footer: an error naming the row group.
    let mut bad = bytes.clone();
    let mid = bytes.len() / 3;
    for b in &mut bad[mid..mid + 200] {
        *b = 0xAB;
    }
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, &bad).unwrap();
    let ds = Dataset::open(&corrupt).unwrap();
    let mut failed = None;
    for u in ds.units().unwrap() {
        if let Err(e) = ds.read_unit(&u, &ReadOptions::default(), &mut |_| Ok(())) {
            failed = Some(e);
        }
    }
    let err = failed.expect("a corrupted page must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("corrupt.parquet") && msg.contains("row group"),
        "{msg}"
    );
}

#[test]
fn broken_gzip_is_an_error_with_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    writeln!(enc, "id,name").unwrap();
    for i in 0..20_000 {
        writeln!(enc, "{i},value-{i}").unwrap();
    }
    let data = enc.finish().unwrap();
    std::fs::write(&p, &data[..data.len() * 2 / 3]).unwrap();
    let ds = Dataset::open(&p).unwrap();
    let err = ds
        .for_each_batch(&ReadOptions::default(), &mut |_| Ok(()))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("broken.csv.gz") && msg.contains("line"),
        "{msg}"
    );
}

#[test]
fn ragged_rows_and_wrong_types_name_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ragged.csv");
    std::fs::write(&p, "a,b,c\n1,2,3\n4,5\n").unwrap();
    let ds = Dataset::open(&p).unwrap();
    let err = ds
        .for_each_batch(&ReadOptions::default(), &mut |_| Ok(()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: line 3: has 2 fields but the header has 3", p.display())
    );

    // Inference samples the head of the file; a later value of another type is an error.
    let p = dir.path().join("types.csv");
    let mut text = String::from("n,s\n");
    for i in 0..25_000 {
        text.push_str(&format!("{i},x\n"));
    }
    text.push_str("oops,x\n");
    std::fs::write(&p, text).unwrap();
    let ds = Dataset::open(&p).unwrap();
    let err = ds
        .for_each_batch(&ReadOptions::default(), &mut |_| Ok(()))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("line 25002, column n: expected an integer"),
        "{msg}"
    );
}

#[test]
fn custom_null_markers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.csv");
    std::fs::write(&p, "a,b\n1,NA\n-,x\n").unwrap();
    let ds = Dataset::open(&p).unwrap();
    let opts = ReadOptions {
        null_markers: vec!["-".into()],
        ..ReadOptions::default()
    };
    let mut nulls = (0, 0);
    ds.for_each_batch(&opts, &mut |b| {
        nulls.0 += b.column(0).null_count();
        nulls.1 += b.column(1).null_count();
        Ok(())
    })
    .unwrap();
    // With only "-" as a marker, "NA" is an ordinary string and "-" is a null.
    assert_eq!(nulls.1, 0);
    assert_eq!(nulls.0, 1);
}
