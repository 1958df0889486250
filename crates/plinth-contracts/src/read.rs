//! Data readers: a [`Dataset`] is one file or a directory of files of one format (Parquet, CSV
//! with optional gzip, Arrow IPC file), read as Arrow record batches in units of parallel work
//! (one per Parquet row group, one per CSV or IPC file). Corrupt input is an error that names the
//! file, the row group or line, and the column; never a panic.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};

/// How many CSV rows schema inference looks at.
const INFER_ROWS: usize = 20_000;

/// Options for one read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Only these columns, in this order (`None`: all columns).
    pub columns: Option<Vec<String>>,
    /// CSV cells equal to one of these are null.
    pub null_markers: Vec<String>,
    /// Rows per record batch.
    pub batch_rows: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            columns: None,
            null_markers: vec![String::new(), "NA".to_string()],
            batch_rows: 65_536,
        }
    }
}

/// A file format the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    Arrow,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
        })
    }
}

/// One unit of parallel work: a Parquet row group, or a whole CSV or IPC file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadUnit {
    pub file: PathBuf,
    pub row_group: Option<usize>,
    /// Rows in the unit, when known without reading it.
    pub rows: Option<u64>,
}

/// Where a record batch came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPos {
    pub file: PathBuf,
    pub row_group: Option<usize>,
    /// CSV: the line of the batch's first data row (1-based, the header is line 1).
    pub line: Option<u64>,
    /// Row offset of the batch's first row within its unit.
    pub row_offset: u64,
}

/// A reading failure; every variant names the file and, where known, the place in it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: row group {row_group}: {message}")]
    Parquet {
        path: PathBuf,
        row_group: usize,
        message: String,
    },
    #[error("{path}: line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: line {line}, column {column}: {message}")]
    Value {
        path: PathBuf,
        line: u64,
        column: String,
        message: String,
    },
    #[error("{path}: column {column}: not in the file")]
    MissingColumn { path: PathBuf, column: String },
    /// A failure raised by the caller's batch callback.
    #[error("{0}")]
    Callback(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ReadError {
    ReadError::Io {
        path: path.to_path_buf(),
        message: e.to_string().to_lowercase_first(),
    }
}

fn fmt_err(path: &Path, message: impl Into<String>) -> ReadError {
    ReadError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

trait LowerFirst {
    fn to_lowercase_first(&self) -> String;
}

impl LowerFirst for String {
    fn to_lowercase_first(&self) -> String {
        let mut c = self.chars();
        match c.next() {
            Some(first) if !self.starts_with("IO") => first.to_lowercase().chain(c).collect(),
            _ => self.clone(),
        }
    }
}

/// One file, or a directory of files of one format, read as one dataset.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    files: Vec<PathBuf>,
    format: Format,
    schema: OnceLock<SchemaRef>,
}

impl Dataset {
    /// Opens a file or a directory (searched recursively; hidden files and names starting with
    /// `_` are skipped). All files must have one format.
    pub fn open(path: &Path) -> Result<Dataset, ReadError> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        let mut files = Vec::new();
        if meta.is_dir() {
            collect_files(path, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(fmt_err(path, "directory holds no data files"));
            }
        } else {
            files.push(path.to_path_buf());
        }
        let mut format = None;
        for f in &files {
            let this = detect_format(f)?;
            match format {
                None => format = Some(this),
                Some(prev) if prev != this => {
                    return Err(fmt_err(
                        f,
                        format!("is {this} but the dataset's other files are {prev}"),
                    ));
                }
                _ => {}
            }
        }
        let format = format.ok_or_else(|| fmt_err(path, "no data files"))?;
        Ok(Dataset {
            root: path.to_path_buf(),
            files,
            format,
            schema: OnceLock::new(),
        })
    }

    /// Opens a dataset whose schema is given rather than inferred (CSV: the cells are parsed as
    /// these types; a cell that does not parse is an error).
    pub fn open_with_schema(path: &Path, schema: SchemaRef) -> Result<Dataset, ReadError> {
        let ds = Dataset::open(path)?;
        let _ = ds.schema.set(schema);
        Ok(ds)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The dataset's schema, from its first file. CSV types are inferred from a sample: int64,
    /// float64, bool, timestamp or date when every sampled value parses, else utf8.
    pub fn schema(&self) -> Result<SchemaRef, ReadError> {
        if let Some(s) = self.schema.get() {
            return Ok(s.clone());
        }
        let first = self
            .files
            .first()
            .ok_or_else(|| fmt_err(&self.root, "no data files"))?;
        let schema = match self.format {
            Format::Parquet => {
                let file = File::open(first).map_err(|e| io_err(first, e))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| fmt_err(first, format!("not a readable parquet file: {e}")))?;
                b.schema().clone()
            }
            Format::Arrow => {
                let file = File::open(first).map_err(|e| io_err(first, e))?;
                let r = arrow::ipc::reader::FileReader::try_new_buffered(file, None)
                    .map_err(|e| fmt_err(first, format!("not a readable arrow ipc file: {e}")))?;
                r.schema()
            }
            Format::Csv => infer_csv_schema(first, &ReadOptions::default().null_markers)?,
        };
        let _ = self.schema.set(schema.clone());
        Ok(schema)
    }

    /// Like [`Dataset::schema`], but CSV types are inferred treating these cells as null.
    pub fn schema_with_null_markers(
        &self,
        null_markers: &[String],
    ) -> Result<SchemaRef, ReadError> {
        match (self.format, self.files.first()) {
            (Format::Csv, Some(first)) if self.schema.get().is_none() => {
                infer_csv_schema(first, null_markers)
            }
            _ => self.schema(),
        }
    }

    /// Units of parallel work: one per Parquet row group, one per CSV or IPC file.
    pub fn units(&self) -> Result<Vec<ReadUnit>, ReadError> {
        let mut units = Vec::new();
        for f in &self.files {
            match self.format {
                Format::Parquet => {
                    let file = File::open(f).map_err(|e| io_err(f, e))?;
                    let b = ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| fmt_err(f, format!("not a readable parquet file: {e}")))?;
                    for (i, rg) in b.metadata().row_groups().iter().enumerate() {
                        units.push(ReadUnit {
                            file: f.clone(),
                            row_group: Some(i),
                            rows: u64::try_from(rg.num_rows()).ok(),
                        });
                    }
                }
                Format::Csv | Format::Arrow => units.push(ReadUnit {
                    file: f.clone(),
                    row_group: None,
                    rows: None,
                }),
            }
        }
        Ok(units)
    }

    /// Reads one unit, calling `f` for each batch.
    pub fn read_unit(
        &self,
        unit: &ReadUnit,
        opts: &ReadOptions,
        f: &mut dyn FnMut(&RecordBatch) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        self.read_unit_at(unit, opts, &mut |_, b| f(b))
    }

    /// Reads one unit, calling `f` with each batch and where it came from.
    pub fn read_unit_at(
        &self,
        unit: &ReadUnit,
        opts: &ReadOptions,
        f: &mut dyn FnMut(&BatchPos, &RecordBatch) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let batch_rows = opts.batch_rows.max(1);
        match self.format {
            Format::Parquet => read_parquet(unit, opts, batch_rows, false, f),
            Format::Arrow => read_ipc(unit, opts, f),
            Format::Csv => {
                let schema = self.schema()?;
                read_csv(&unit.file, &schema, opts, batch_rows, f)
            }
        }
    }

    /// Like [`Dataset::read_unit`], but Parquet string columns come back as
    /// `Dictionary(Int32, Utf8)`, the way they are usually stored, instead of one string per
    /// row (callers that evaluate each distinct value once read far less). Other formats are
    /// read as by `read_unit`.
    pub fn read_unit_dictionary(
        &self,
        unit: &ReadUnit,
        opts: &ReadOptions,
        f: &mut dyn FnMut(&RecordBatch) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        match self.format {
            Format::Parquet => {
                read_parquet(unit, opts, opts.batch_rows.max(1), true, &mut |_, b| f(b))
            }
            _ => self.read_unit(unit, opts, f),
        }
    }

    /// Reads every unit in order.
    pub fn for_each_batch(
        &self,
        opts: &ReadOptions,
        f: &mut dyn FnMut(&RecordBatch) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        for unit in self.units()? {
            self.read_unit(&unit, opts, f)?;
        }
        Ok(())
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| io_err(&p, e))?;
        if ft.is_dir() {
            collect_files(&p, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(p);
        }
    }
    Ok(())
}

/// The format of a file, by its extension, else by its first bytes.
pub fn detect_format(path: &Path) -> Result<Format, ReadError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    if stem.ends_with(".parquet") || stem.ends_with(".pq") {
        return Ok(Format::Parquet);
    }
    if stem.ends_with(".csv") || stem.ends_with(".txt") {
        return Ok(Format::Csv);
    }
    if stem.ends_with(".arrow") || stem.ends_with(".feather") || stem.ends_with(".ipc") {
        return Ok(Format::Arrow);
    }
    let mut head = [0u8; 6];
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| io_err(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"PAR1") {
        Ok(Format::Parquet)
    } else if head.starts_with(b"ARROW1") {
        Ok(Format::Arrow)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Format::Csv)
    } else {
        Err(fmt_err(
            path,
            "unknown data format (expected .parquet, .csv, .csv.gz or .arrow)",
        ))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn projection_indices(
    path: &Path,
    schema: &Schema,
    columns: &Option<Vec<String>>,
) -> Result<Option<Vec<usize>>, ReadError> {
    let Some(cols) = columns else {
        return Ok(None);
    };
    let mut idx = Vec::with_capacity(cols.len());
    for c in cols {
        let i = schema.index_of(c).map_err(|_| ReadError::MissingColumn {
            path: path.to_path_buf(),
            column: c.clone(),
        })?;
        idx.push(i);
    }
    Ok(Some(idx))
}

/// Reorders a batch's columns to `columns` order (Parquet and IPC projections keep file order).
fn reorder(batch: RecordBatch, columns: &Option<Vec<String>>) -> Result<RecordBatch, String> {
    let Some(cols) = columns else {
        return Ok(batch);
    };
    let schema = batch.schema();
    let mut idx = Vec::with_capacity(cols.len());
    for c in cols {
        idx.push(schema.index_of(c).map_err(|e| e.to_string())?);
    }
    if idx.iter().enumerate().all(|(i, j)| i == *j) && idx.len() == schema.fields().len() {
        return Ok(batch);
    }
    batch.project(&idx).map_err(|e| e.to_string())
}

/// The schema with every Utf8 field as `Dictionary(Int32, Utf8)`; `None` when there is none.
fn dictionary_schema(schema: &Schema) -> Option<SchemaRef> {
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8)
    {
        return None;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if f.data_type() == &DataType::Utf8 {
                f.with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                ))
            } else {
                f
            }
        })
        .collect();
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

fn read_parquet(
    unit: &ReadUnit,
    opts: &ReadOptions,
    batch_rows: usize,
    dictionary: bool,
    f: &mut dyn FnMut(&BatchPos, &RecordBatch) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let path = &unit.file;
    let rg = unit.row_group.unwrap_or(0);
    let perr = |message: String| ReadError::Parquet {
        path: path.clone(),
        row_group: rg,
        message,
    };
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let unreadable = |e: parquet::errors::ParquetError| {
        fmt_err(path, format!("not a readable parquet file: {e}"))
    };
    let mut meta =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(unreadable)?;
    if dictionary && let Some(schema) = dictionary_schema(meta.schema()) {
        meta = ArrowReaderMetadata::try_new(
            meta.metadata().clone(),
            ArrowReaderOptions::new().with_schema(schema),
        )
        .map_err(unreadable)?;
    }
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta);
    let n_groups = builder.metadata().num_row_groups();
    let mut builder = builder.with_batch_size(batch_rows);
    if let Some(g) = unit.row_group {
        if g >= n_groups {
            return Err(perr(format!("the file has only {n_groups} row groups")));
        }
        builder = builder.with_row_groups(vec![g]);
    }
    if let Some(idx) = projection_indices(path, builder.schema(), &opts.columns)? {
        let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(|e| perr(e.to_string()))?;
    let mut offset = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| perr(format!("cannot decode: {e}")))?;
        let batch = reorder(batch, &opts.columns).map_err(perr)?;
        let pos = BatchPos {
            file: path.clone(),
            row_group: unit.row_group,
            line: None,
            row_offset: offset,
        };
        offset += batch.num_rows() as u64;
        f(&pos, &batch)?;
    }
    Ok(())
}

fn read_ipc(
    unit: &ReadUnit,
    opts: &ReadOptions,
    f: &mut dyn FnMut(&BatchPos, &RecordBatch) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let path = &unit.file;
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let probe = arrow::ipc::reader::FileReader::try_new_buffered(file, None)
        .map_err(|e| fmt_err(path, format!("not a readable arrow ipc file: {e}")))?;
    let idx = projection_indices(path, &probe.schema(), &opts.columns)?;
    drop(probe);
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let reader = arrow::ipc::reader::FileReader::try_new_buffered(file, idx)
        .map_err(|e| fmt_err(path, format!("not a readable arrow ipc file: {e}")))?;
    let mut offset = 0u64;
    for (i, batch) in reader.enumerate() {
        let batch = batch.map_err(|e| fmt_err(path, format!("record batch {i}: {e}")))?;
        let batch =
            reorder(batch, &opts.columns).map_err(|e| fmt_err(path, format!("batch {i}: {e}")))?;
        let pos = BatchPos {
            file: path.clone(),
            row_group: None,
            line: None,
            row_offset: offset,
        };
        offset += batch.num_rows() as u64;
        f(&pos, &batch)?;
    }
    Ok(())
}

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read + Send>, ReadError> {
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| io_err(path, e))?;
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
        || (n == 2 && magic == [0x1f, 0x8b]);
    let buf = BufReader::with_capacity(1 << 16, file);
    if gz {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)))
    } else {
        Ok(Box::new(buf))
    }
}

fn csv_reader(path: &Path) -> Result<csv::Reader<Box<dyn Read + Send>>, ReadError> {
    let r = open_maybe_gz(path)?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(r))
}

fn csv_error(path: &Path, line: u64, e: csv::Error) -> ReadError {
    let line = e.position().map(|p| p.line()).unwrap_or(line);
    let message = match e.kind() {
        csv::ErrorKind::Io(io) => format!("cannot read (broken or truncated gzip stream?): {io}"),
        csv::ErrorKind::Utf8 { .. } => "invalid utf-8".to_string(),
        _ => e.to_string(),
    };
    ReadError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    }
}

fn headers(
    path: &Path,
    r: &mut csv::Reader<Box<dyn Read + Send>>,
) -> Result<Vec<String>, ReadError> {
    let h = r.headers().map_err(|e| csv_error(path, 1, e))?;
    if h.is_empty() {
        return Err(fmt_err(path, "empty csv file (no header row)"));
    }
    Ok(h.iter().map(|s| s.trim().to_string()).collect())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Guess {
    Unknown,
    Int,
    Float,
    Bool,
    Date,
    TsUtc,
    TsNaive,
    Text,
}

fn classify(s: &str) -> Guess {
    let t = s.trim();
    if parse_int(t).is_some() {
        return Guess::Int;
    }
    if parse_float(t).is_some() {
        return Guess::Float;
    }
    if parse_bool(t).is_some() {
        return Guess::Bool;
    }
    if NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() {
        return Guess::Date;
    }
    if DateTime::parse_from_rfc3339(t).is_ok() {
        return Guess::TsUtc;
    }
    if parse_naive_ts(t).is_some() {
        return Guess::TsNaive;
    }
    Guess::Text
}

fn merge(a: Guess, b: Guess) -> Guess {
    use Guess::*;
    match (a, b) {
        (Unknown, x) | (x, Unknown) => x,
        (x, y) if x == y => x,
        (Int, Float) | (Float, Int) => Float,
        _ => Text,
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.len() > 1 && digits.starts_with('0') {
        return None; // keep codes such as zip codes as text
    }
    t.parse::<i64>().ok()
}

fn parse_float(t: &str) -> Option<f64> {
    if !t.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<f64>().ok()
}

fn parse_bool(t: &str) -> Option<bool> {
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn parse_naive_ts(t: &str) -> Option<NaiveDateTime> {
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(v) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(v);
        }
    }
    None
}

fn infer_csv_schema(path: &Path, null_markers: &[String]) -> Result<SchemaRef, ReadError> {
    let mut r = csv_reader(path)?;
    let names = headers(path, &mut r)?;
    let mut guesses = vec![Guess::Unknown; names.len()];
    let mut rec = csv::StringRecord::new();
    let mut rows = 0usize;
    while rows < INFER_ROWS {
        match r.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, rows as u64 + 2, e)),
        }
        rows += 1;
        for (i, cell) in rec.iter().enumerate().take(names.len()) {
            if null_markers.iter().any(|m| m == cell) {
                continue;
            }
            if guesses[i] != Guess::Text {
                guesses[i] = merge(guesses[i], classify(cell));
            }
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(guesses)
        .map(|(n, g)| {
            let dt = match g {
                Guess::Int => DataType::Int64,
                Guess::Float => DataType::Float64,
                Guess::Bool => DataType::Boolean,
                Guess::Date => DataType::Date32,
                Guess::TsUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Guess::TsNaive => DataType::Timestamp(TimeUnit::Microsecond, None),
                Guess::Unknown | Guess::Text => DataType::Utf8,
            };
            Field::new(n, dt, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

enum ColBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Text(StringBuilder),
}

impl ColBuilder {
    fn new(dt: &DataType, cap: usize) -> Result<ColBuilder, String> {
        Ok(match dt {
            DataType::Int64 => ColBuilder::Int(Int64Builder::with_capacity(cap)),
            DataType::Float64 => ColBuilder::Float(Float64Builder::with_capacity(cap)),
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Date32 => ColBuilder::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(cap), tz.clone())
            }
            DataType::Utf8 => ColBuilder::Text(StringBuilder::with_capacity(cap, cap * 8)),
            other => return Err(format!("csv columns cannot be read as {other}")),
        })
    }

    fn push(&mut self, cell: Option<&str>) -> Result<(), &'static str> {
        match self {
            ColBuilder::Text(b) => b.append_option(cell),
            ColBuilder::Int(b) => match cell {
                None => b.append_null(),
                Some(s) => {
                    b.append_value(s.trim().parse::<i64>().map_err(|_| "expected an integer")?)
                }
            },
            ColBuilder::Float(b) => match cell {
                None => b.append_null(),
                Some(s) => {
                    b.append_value(s.trim().parse::<f64>().map_err(|_| "expected a number")?)
                }
            },
            ColBuilder::Bool(b) => match cell {
                None => b.append_null(),
                Some(s) => b.append_value(parse_bool(s.trim()).ok_or("expected true or false")?),
            },
            ColBuilder::Date(b) => match cell {
                None => b.append_null(),
                Some(s) => {
                    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                        .map_err(|_| "expected a date (yyyy-mm-dd)")?;
                    b.append_value(days_since_epoch(d));
                }
            },
            ColBuilder::Ts(b, _) => match cell {
                None => b.append_null(),
                Some(s) => {
                    let t = s.trim();
                    let v = match DateTime::parse_from_rfc3339(t) {
                        Ok(dt) => dt.timestamp_micros(),
                        Err(_) => parse_naive_ts(t)
                            .map(|n| n.and_utc().timestamp_micros())
                            .ok_or("expected a timestamp (rfc 3339)")?,
                    };
                    b.append_value(v);
                }
            },
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Int(b) => Arc::new(b.finish()),
            ColBuilder::Float(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Date(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            ColBuilder::Text(b) => Arc::new(b.finish()),
        }
    }
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((d - epoch).num_days()).unwrap_or(i32::MAX)
}

fn read_csv(
    path: &Path,
    dataset_schema: &SchemaRef,
    opts: &ReadOptions,
    batch_rows: usize,
    f: &mut dyn FnMut(&BatchPos, &RecordBatch) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut r = csv_reader(path)?;
    let names = headers(path, &mut r)?;
    let width = names.len();
    // Which file column feeds each output column, and with which type.
    let wanted: Vec<String> = match &opts.columns {
        Some(c) => c.clone(),
        None => dataset_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    };
    let mut src = Vec::with_capacity(wanted.len());
    let mut fields = Vec::with_capacity(wanted.len());
    for w in &wanted {
        let i = names
            .iter()
            .position(|n| n == w)
            .ok_or_else(|| ReadError::MissingColumn {
                path: path.to_path_buf(),
                column: w.clone(),
            })?;
        let dt = dataset_schema
            .field_with_name(w)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Utf8);
        src.push(i);
        fields.push(Field::new(w, dt, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let cap = batch_rows.min(1 << 16);
    let new_builders = || -> Result<Vec<ColBuilder>, ReadError> {
        schema
            .fields()
            .iter()
            .map(|fl| ColBuilder::new(fl.data_type(), cap).map_err(|m| fmt_err(path, m)))
            .collect()
    };
    let mut builders = new_builders()?;
    let mut rec = csv::ByteRecord::new();
    let mut rows_in_batch = 0usize;
    let mut line = 1u64; // header
    let mut batch_first_line = 2u64;
    let mut offset = 0u64;
    let markers: Vec<&[u8]> = opts.null_markers.iter().map(|m| m.as_bytes()).collect();
    let mut flush = |builders: &mut Vec<ColBuilder>,
                     rows: usize,
                     first_line: u64,
                     offset: &mut u64|
     -> Result<(), ReadError> {
        let cols: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(schema.clone(), cols, &opts)
            .map_err(|e| fmt_err(path, e.to_string()))?;
        let pos = BatchPos {
            file: path.to_path_buf(),
            row_group: None,
            line: Some(first_line),
            row_offset: *offset,
        };
        *offset += rows as u64;
        f(&pos, &batch)
    };
    loop {
        match r.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, line + 1, e)),
        }
        line = rec.position().map(|p| p.line()).unwrap_or(line + 1);
        if rec.len() != width {
            if rec.len() == 1 && rec.get(0).is_some_and(|c| c.is_empty()) {
                continue; // blank line
            }
            return Err(ReadError::Csv {
                path: path.to_path_buf(),
                line,
                message: format!("has {} fields but the header has {width}", rec.len()),
            });
        }
        if rows_in_batch == 0 {
            batch_first_line = line;
        }
        for (b, &i) in builders.iter_mut().zip(&src) {
            let raw = rec.get(i).unwrap_or_default();
            let cell = if markers.contains(&raw) {
                None
            } else {
                Some(std::str::from_utf8(raw).map_err(|_| ReadError::Value {
                    path: path.to_path_buf(),
                    line,
                    column: names[i].clone(),
                    message: "invalid utf-8".into(),
                })?)
            };
            b.push(cell).map_err(|m| ReadError::Value {
                path: path.to_path_buf(),
                line,
                column: names[i].clone(),
                message: format!("{m}, found {:?}", truncate(cell.unwrap_or_default(), 60)),
            })?;
        }
        rows_in_batch += 1;
        if rows_in_batch >= batch_rows {
            flush(&mut builders, rows_in_batch, batch_first_line, &mut offset)?;
            rows_in_batch = 0;
        }
    }
    if rows_in_batch > 0 {
        flush(&mut builders, rows_in_batch, batch_first_line, &mut offset)?;
    }
    Ok(())
}

/// At most `n` characters of `s`, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}
