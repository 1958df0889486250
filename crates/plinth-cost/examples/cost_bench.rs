//! The cost benchmark's Plinth side (driven by bench/cost/run).
//!
//!     cost_bench gen --records N --out FILE.parquet [--seed S]
//!         writes N seeded usage records (30 days from 2026-11-01; 40 teams, 300 models,
//!         2,000 jobs a day, 10-minute metering intervals, 5 % serving replicas, 1 % without a
//!         team) and FILE.prices.csv, the pool prices.
//!     cost_bench run --data FILE.parquet --out REPORT.csv [--threads T]
//!         reads the records, allocates them over November 2026 and reports by team × model ×
//!         day (idle apart); writes the rows and prints a JSON summary.
#![allow(clippy::print_stdout)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder, UInt32Array, UInt32Builder,
    UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use plinth_cost::*;

type Error = Box<dyn std::error::Error + Send + Sync>;

const START_US: i64 = 1_793_491_200_000_000; // 2026-11-01T00:00:00Z
const DAY_US: i64 = 86_400_000_000;
const STEP_US: i64 = 600_000_000; // 10 minutes
const DAYS: i64 = 30;
const JOBS_PER_DAY: u64 = 2_000;
const TEAMS: u64 = 40;
const MODELS: u64 = 300;

struct Pool {
    name: &'static str,
    procurement: &'static str,
    /// GPU, CPU, memory price per hour.
    rates: [f64; 3],
    /// GPUs, cores, GiB.
    capacity: [f64; 3],
}

const POOLS: [Pool; 4] = [
    Pool {
        name: "a100",
        procurement: "on_demand",
        rates: [2.50, 0.05, 0.010],
        capacity: [512.0, 4096.0, 32768.0],
    },
    Pool {
        name: "h100",
        procurement: "reserved",
        rates: [3.00, 0.04, 0.008],
        capacity: [256.0, 2048.0, 16384.0],
    },
    Pool {
        name: "l4",
        procurement: "spot",
        rates: [0.40, 0.03, 0.005],
        capacity: [256.0, 2048.0, 8192.0],
    },
    Pool {
        name: "cpu",
        procurement: "on_demand",
        rates: [0.0, 0.045, 0.006],
        capacity: [0.0, 8192.0, 32768.0],
    },
];

fn procurement(s: &str) -> Result<Procurement, Error> {
    Ok(match s {
        "on_demand" => Procurement::OnDemand,
        "reserved" => Procurement::Reserved,
        "spot" => Procurement::Spot,
        _ => return Err(format!("unknown procurement {s:?}").into()),
    })
}

fn book() -> Result<PriceBook, Error> {
    let mut b = PriceBook::new("USD")?;
    for p in POOLS {
        let [g, c, m] = p.rates;
        let [cg, cc, cm] = p.capacity;
        b.add(PoolPrice {
            pool: p.name.into(),
            procurement: procurement(p.procurement)?,
            currency: "USD".into(),
            rates: Rates::new(g, c, m),
            list: None,
            capacity: Some(Resources::new(cg, cc, cm)),
            region: None,
            since: None,
        })?;
    }
    Ok(b)
}

/// splitmix64
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Cols {
    id: StringBuilder,
    kind: StringBuilder,
    job: StringBuilder,
    attempt: UInt32Builder,
    deployment: StringBuilder,
    pool: StringBuilder,
    procurement: StringBuilder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    f: [Float64Builder; 6],
    tags: [StringBuilder; 6],
    inferences: UInt64Builder,
    n: usize,
}

const F_NAMES: [&str; 6] = [
    "req_gpus",
    "req_cpus",
    "req_mem_gib",
    "use_gpus",
    "use_cpus",
    "use_mem_gib",
];
const T_NAMES: [&str; 6] = ["team", "project", "env", "model", "owner", "model_version"];

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn schema() -> Arc<Schema> {
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, true),
        Field::new("attempt", DataType::UInt32, false),
        Field::new("deployment", DataType::Utf8, true),
        Field::new("pool", DataType::Utf8, false),
        Field::new("procurement", DataType::Utf8, false),
        Field::new("start", ts(), false),
        Field::new("end", ts(), false),
    ];
    fields.extend(
        F_NAMES
            .iter()
            .map(|n| Field::new(*n, DataType::Float64, false)),
    );
    fields.extend(T_NAMES.iter().map(|n| Field::new(*n, DataType::Utf8, true)));
    fields.push(Field::new("inferences", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

impl Cols {
    fn new() -> Self {
        Cols {
            id: StringBuilder::new(),
            kind: StringBuilder::new(),
            job: StringBuilder::new(),
            attempt: UInt32Builder::new(),
            deployment: StringBuilder::new(),
            pool: StringBuilder::new(),
            procurement: StringBuilder::new(),
            start: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            end: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            f: std::array::from_fn(|_| Float64Builder::new()),
            tags: std::array::from_fn(|_| StringBuilder::new()),
            inferences: UInt64Builder::new(),
            n: 0,
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.job.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.deployment.finish()),
            Arc::new(self.pool.finish()),
            Arc::new(self.procurement.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
        ];
        for b in &mut self.f {
            arrays.push(Arc::new(b.finish()));
        }
        for b in &mut self.tags {
            arrays.push(Arc::new(b.finish()));
        }
        arrays.push(Arc::new(self.inferences.finish()));
        self.n = 0;
        Ok(RecordBatch::try_new(schema(), arrays)?)
    }
}

fn generate(records: u64, out: &str, seed: u64) -> Result<(), Error> {
    let jobs = JOBS_PER_DAY * DAYS as u64;
    let per_job = records / jobs;
    let extra = records % jobs;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut w = ArrowWriter::try_new(File::create(out)?, schema(), Some(props))?;
    let mut rng = Rng(seed);
    let mut c = Cols::new();
    let mut n: u64 = 0;
    for j in 0..jobs {
        let day = (j / JOBS_PER_DAY) as i64;
        let team = rng.below(TEAMS);
        let untagged = rng.below(100) == 0;
        let model = (team * 37 + rng.below(MODELS / 4)) % MODELS;
        let project = team * 3 + rng.below(3);
        let env = ["dev", "staging", "production"][rng.below(3) as usize];
        let owner = rng.below(500);
        let serving = rng.below(20) == 0;
        let (pi, gpus) = if serving {
            (0usize, [1.0, 2.0][rng.below(2) as usize])
        } else {
            match rng.below(10) {
                0..=3 => (0, [1.0, 2.0, 4.0, 8.0][rng.below(4) as usize]),
                4..=5 => (1, [2.0, 4.0, 8.0][rng.below(3) as usize]),
                6..=7 => (2, [0.5, 1.0, 2.0][rng.below(3) as usize]),
                _ => (3, 0.0),
            }
        };
        let cpus = [4.0, 8.0, 16.0, 32.0][rng.below(4) as usize];
        let mem = cpus * 8.0;
        let version = format!("v{}", 1 + rng.below(5));
        // Start on any minute of the day, so that some 10-minute intervals cross midnight.
        let mut t = START_US + day * DAY_US + (rng.below(1440) as i64) * 60_000_000;
        let count = per_job + u64::from(j < extra);
        let mut attempt = 1;
        for _ in 0..count {
            c.id.append_value(format!("r{n}"));
            if serving {
                c.kind.append_value("serving");
                c.job.append_null();
                c.deployment.append_value(format!("deploy-{}", model % 60));
                c.inferences.append_value(200 + rng.below(2000));
            } else {
                c.kind.append_value("job");
                c.job.append_value(format!("job-{j}"));
                c.deployment.append_null();
                c.inferences.append_value(0);
                if pi == 2 && rng.below(200) == 0 {
                    attempt += 1; // preempted spot attempt, retried
                }
            }
            c.attempt.append_value(attempt);
            c.pool.append_value(POOLS[pi].name);
            c.procurement.append_value(POOLS[pi].procurement);
            c.start.append_value(t);
            c.end.append_value(t + STEP_US);
            t += STEP_US;
            let vals = [
                gpus,
                cpus,
                mem,
                gpus * (0.6 + 0.5 * rng.unit()),
                cpus * (0.3 + 1.0 * rng.unit()),
                mem * (0.4 + 0.8 * rng.unit()),
            ];
            for (b, v) in c.f.iter_mut().zip(vals) {
                b.append_value(v);
            }
            if untagged {
                c.tags[0].append_null();
            } else {
                c.tags[0].append_value(format!("team-{team}"));
            }
            c.tags[1].append_value(format!("project-{project}"));
            c.tags[2].append_value(env);
            c.tags[3].append_value(format!("model-{model}"));
            c.tags[4].append_value(format!("user-{owner}"));
            c.tags[5].append_value(&version);
            c.n += 1;
            n += 1;
            if c.n == 1 << 20 {
                w.write(&c.finish()?)?;
            }
        }
    }
    if c.n > 0 {
        w.write(&c.finish()?)?;
    }
    w.close()?;
    let mut p = BufWriter::new(File::create(format!(
        "{}.prices.csv",
        out.trim_end_matches(".parquet")
    ))?);
    writeln!(
        p,
        "pool,procurement,gpu_hour,cpu_hour,memory_gib_hour,capacity_gpus,capacity_cpus,capacity_memory_gib"
    )?;
    for pool in POOLS {
        let [g, c, m] = pool.rates;
        let [cg, cc, cm] = pool.capacity;
        writeln!(
            p,
            "{},{},{g},{c},{m},{cg},{cc},{cm}",
            pool.name, pool.procurement
        )?;
    }
    p.flush()?;
    println!("{{\"records\": {n}}}");
    Ok(())
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, Error> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name} missing or of another type").into())
}

fn set(slot: &mut Option<String>, v: Option<&str>) {
    match (slot.as_mut(), v) {
        (Some(s), Some(v)) => {
            s.clear();
            s.push_str(v);
        }
        (_, v) => *slot = v.map(String::from),
    }
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

fn ts_of(us: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| format!("timestamp {us} out of range").into())
}

/// One thread's share: the row groups `groups` of the file.
fn run_part<'b>(
    data: &str,
    groups: Vec<usize>,
    book: &'b PriceBook,
    window: Window,
    dims: &[Dimension],
) -> Result<(Allocator<'b>, ReportBuilder, u64), Error> {
    let mut alloc = Allocator::new(book, window);
    let mut report = ReportBuilder::new(dims, false);
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(data)?)?
        .with_row_groups(groups)
        .with_batch_size(64 * 1024)
        .build()?;
    let mut rec = UsageRecord {
        id: String::new(),
        workload: Workload::Job {
            job: String::new(),
            attempt: 0,
        },
        pool: String::new(),
        procurement: Procurement::OnDemand,
        start: DateTime::UNIX_EPOCH,
        end: DateTime::UNIX_EPOCH,
        request: Resources::ZERO,
        usage: Resources::ZERO,
        tags: Tags::default(),
        model_version: None,
        inferences: 0,
        direct_cost: None,
    };
    let mut n = 0u64;
    for batch in reader {
        let b = batch?;
        let id = col::<StringArray>(&b, "id")?;
        let kind = col::<StringArray>(&b, "kind")?;
        let job = col::<StringArray>(&b, "job")?;
        let attempt = col::<UInt32Array>(&b, "attempt")?;
        let deployment = col::<StringArray>(&b, "deployment")?;
        let pool = col::<StringArray>(&b, "pool")?;
        let procurement_col = col::<StringArray>(&b, "procurement")?;
        let start = col::<TimestampMicrosecondArray>(&b, "start")?;
        let end = col::<TimestampMicrosecondArray>(&b, "end")?;
        let f: Vec<&Float64Array> = F_NAMES
            .iter()
            .map(|n| col::<Float64Array>(&b, n))
            .collect::<Result<_, _>>()?;
        let t: Vec<&StringArray> = T_NAMES
            .iter()
            .map(|n| col::<StringArray>(&b, n))
            .collect::<Result<_, _>>()?;
        let inferences = col::<UInt64Array>(&b, "inferences")?;
        for i in 0..b.num_rows() {
            rec.id.clear();
            rec.id.push_str(id.value(i));
            match (kind.value(i), &mut rec.workload) {
                ("job", Workload::Job { job: j, attempt: a }) => {
                    j.clear();
                    j.push_str(job.value(i));
                    *a = attempt.value(i);
                }
                ("job", w) => {
                    *w = Workload::Job {
                        job: job.value(i).to_string(),
                        attempt: attempt.value(i),
                    }
                }
                (_, Workload::Serving { deployment: d }) => {
                    d.clear();
                    d.push_str(deployment.value(i));
                }
                (_, w) => {
                    *w = Workload::Serving {
                        deployment: deployment.value(i).to_string(),
                    }
                }
            }
            rec.pool.clear();
            rec.pool.push_str(pool.value(i));
            rec.procurement = procurement(procurement_col.value(i))?;
            rec.start = ts_of(start.value(i))?;
            rec.end = ts_of(end.value(i))?;
            rec.request = Resources::new(f[0].value(i), f[1].value(i), f[2].value(i));
            rec.usage = Resources::new(f[3].value(i), f[4].value(i), f[5].value(i));
            set(&mut rec.tags.team, opt(t[0], i));
            set(&mut rec.tags.project, opt(t[1], i));
            set(&mut rec.tags.env, opt(t[2], i));
            set(&mut rec.tags.model, opt(t[3], i));
            set(&mut rec.tags.owner, opt(t[4], i));
            set(&mut rec.model_version, opt(t[5], i));
            rec.inferences = inferences.value(i);
            alloc.allocate(&rec, |line| report.add(&line.charge()))?;
            n += 1;
        }
    }
    Ok((alloc, report, n))
}

fn run(data: &str, out: &str, threads: usize) -> Result<(), Error> {
    let t0 = Instant::now();
    let book = book()?;
    let window = Window::month("2026-11")?;
    let dims = [Dimension::Team, Dimension::Model, Dimension::Day];
    let row_groups = ParquetRecordBatchReaderBuilder::try_new(File::open(data)?)?
        .metadata()
        .num_row_groups();
    let threads = threads.clamp(1, row_groups.max(1));
    let parts: Vec<Vec<usize>> = (0..threads)
        .map(|t| (0..row_groups).filter(|g| g % threads == t).collect())
        .collect();
    let results: Vec<Result<(Allocator<'_>, ReportBuilder, u64), Error>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|groups| {
                    let book = &book;
                    let dims = &dims;
                    s.spawn(move || run_part(data, groups, book, window, dims))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into())))
                .collect()
        });
    let mut alloc = Allocator::new(&book, window);
    let mut report = ReportBuilder::new(&dims, false);
    let mut n = 0;
    for r in results {
        let (a, rep, k) = r?;
        alloc.merge(a);
        report.merge(rep);
        n += k;
    }
    for idle in alloc.finish() {
        report.add_idle(&idle);
    }
    let rep = report.finish(book.currency());
    let compute_s = t0.elapsed().as_secs_f64();
    let mut w = BufWriter::new(File::create(out)?);
    writeln!(w, "team,model,day,cost")?;
    let mut groups = 0;
    for r in rep.rows.iter().filter(|r| !r.idle) {
        writeln!(
            w,
            "{},{},{},{:.6}",
            r.group[0], r.group[1], r.group[2], r.cost
        )?;
        groups += 1;
    }
    w.flush()?;
    println!(
        "{}",
        serde_json::json!({
            "records": n,
            "groups": groups,
            "allocated_total": rep.allocated_total,
            "idle_total": rep.idle_total,
            "untagged_total": rep.untagged_total,
            "threads": threads,
            "seconds": compute_s,
        })
    );
    Ok(())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cost_bench gen --records N --out F.parquet [--seed S] | run --data F.parquet --out R.csv [--threads T]";
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let n: u64 = arg(&args, "--records").ok_or(usage)?.parse()?;
            let seed: u64 = arg(&args, "--seed")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(7);
            generate(n, &arg(&args, "--out").ok_or(usage)?, seed)
        }
        Some("run") => {
            let threads = match arg(&args, "--threads") {
                Some(t) => t.parse()?,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
            run(
                &arg(&args, "--data").ok_or(usage)?,
                &arg(&args, "--out").ok_or(usage)?,
                threads,
            )
        }
        _ => Err(usage.into()),
    }
}
