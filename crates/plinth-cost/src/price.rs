//! Prices: per pool and procurement, a rate per GPU-hour, CPU core-hour and memory GiB-hour.

use std::collections::HashMap;

use plinth_types::spec::{PoolSpec, Procurement};
use serde::{Deserialize, Serialize};

use crate::error::{CostError, check_amount, check_currency, procurement_name};
use crate::usage::Resources;

/// Price of one unit of each resource for one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub gpu_hour: f64,
    pub cpu_hour: f64,
    pub memory_gib_hour: f64,
}

impl Rates {
    pub fn new(gpu_hour: f64, cpu_hour: f64, memory_gib_hour: f64) -> Self {
        Rates {
            gpu_hour,
            cpu_hour,
            memory_gib_hour,
        }
    }

    /// Cost of `q` resource-hours, per resource.
    pub fn cost(&self, q: Resources) -> Resources {
        Resources {
            gpus: q.gpus * self.gpu_hour,
            cpus: q.cpus * self.cpu_hour,
            memory_gib: q.memory_gib * self.memory_gib_hour,
        }
    }

    fn check(&self, what: &str) -> Result<(), CostError> {
        check_amount(|| format!("{what}.gpu_hour"), self.gpu_hour)?;
        check_amount(|| format!("{what}.cpu_hour"), self.cpu_hour)?;
        check_amount(|| format!("{what}.memory_gib_hour"), self.memory_gib_hour)?;
        Ok(())
    }
}

/// The price of one pool under one procurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolPrice {
    pub pool: String,
    pub procurement: Procurement,
    /// ISO 4217 code.
    pub currency: String,
    /// What is paid (the contracted price).
    pub rates: Rates,
    /// The public on-demand price, for list cost and savings; `None` means equal to `rates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Rates>,
    /// Capacity paid for, per hour, whether used or not: GPUs, CPU cores and memory GiB of all
    /// nodes. Required for reserved capacity; for on-demand or spot pools it is given when
    /// the nodes are provisioned for the whole window (fixed pools), and `None` when capacity
    /// is paid only while used (then the pool has no idle cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// When the capacity started to be paid for (the pool's creation); idle cost is not
    /// counted before it. `None`: paid for the whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

impl PoolPrice {
    /// The list rates (the contracted rates when no list price is given).
    pub fn list_rates(&self) -> Rates {
        self.list.unwrap_or(self.rates)
    }

    /// Builds the price of a `Pool` resource. GPU pools use `pricePerGpuHour`; a node price
    /// (`pricePerNodeHour`) is spread over the node's CPU cores (or over its GPUs in a GPU pool
    /// without a GPU price). Capacity is the pool's nodes × per-node resources. A pool with
    /// neither price is an error naming the pool.
    pub fn from_pool_spec(name: &str, spec: &PoolSpec) -> Result<PoolPrice, CostError> {
        let nodes = f64::from(spec.nodes);
        let gpus_per_node = spec.accelerator.as_ref().map(|a| f64::from(a.count));
        let cpus_per_node = f64::from(spec.cpus_per_node);
        let mut rates = Rates::default();
        match (
            spec.price_per_gpu_hour,
            spec.price_per_node_hour,
            gpus_per_node,
        ) {
            (None, None, _) => return Err(CostError::missing_price(name, spec.procurement)),
            (Some(_), _, None) => {
                return Err(CostError::arg(
                    format!("pool {name:?}"),
                    "pricePerGpuHour is set but the pool has no accelerator",
                ));
            }
            (gpu, node, gpus) => {
                if let Some(g) = gpu {
                    rates.gpu_hour = check_amount(|| format!("pool {name:?} pricePerGpuHour"), g)?;
                }
                if let Some(n) = node {
                    let n = check_amount(|| format!("pool {name:?} pricePerNodeHour"), n)?;
                    match (gpu, gpus) {
                        (None, Some(g)) if g > 0.0 => rates.gpu_hour = n / g,
                        _ if cpus_per_node > 0.0 => rates.cpu_hour = n / cpus_per_node,
                        _ => {
                            return Err(CostError::arg(
                                format!("pool {name:?}"),
                                "pricePerNodeHour needs cpusPerNode above 0",
                            ));
                        }
                    }
                }
            }
        }
        let price = PoolPrice {
            pool: name.to_string(),
            procurement: spec.procurement,
            currency: spec.currency.clone(),
            rates,
            list: None,
            capacity: Some(Resources::new(
                nodes * gpus_per_node.unwrap_or(0.0),
                nodes * cpus_per_node,
                nodes * f64::from(spec.memory_gib_per_node),
            )),
            region: spec.region.clone(),
            since: match &spec.priced_since {
                Some(t) => Some(
                    parse_priced_since(t)
                        .map_err(|m| CostError::arg(format!("pool {name:?} pricedSince"), m))?,
                ),
                None => None,
            },
        };
        price.validate()?;
        Ok(price)
    }

    /// Checks currency, rates and capacity.
    pub fn validate(&self) -> Result<(), CostError> {
        let what = format!(
            "pool {:?} ({})",
            self.pool,
            procurement_name(self.procurement)
        );
        if self.pool.is_empty() {
            return Err(CostError::arg("pool price", "the pool name is empty"));
        }
        check_currency(&what, &self.currency)?;
        self.rates.check(&format!("{what} price"))?;
        if let Some(list) = &self.list {
            list.check(&format!("{what} list price"))?;
        }
        match &self.capacity {
            Some(c) => c.check(&format!("{what} capacity"))?,
            None if self.procurement == Procurement::Reserved => {
                return Err(CostError::arg(
                    what,
                    "reserved capacity needs a capacity (it is paid whether used or not)",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// Parses a Pool's `pricedSince`: an RFC 3339 time such as `2026-11-01T00:00:00Z`.
pub fn parse_priced_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-11-01T00:00:00Z ({e})"))
}

/// All prices, in one currency.
#[derive(Debug, Clone)]
pub struct PriceBook {
    currency: String,
    prices: Vec<PoolPrice>,
    index: HashMap<String, [Option<usize>; 3]>,
}

fn slot(p: Procurement) -> usize {
    match p {
        Procurement::OnDemand => 0,
        Procurement::Reserved => 1,
        Procurement::Spot => 2,
    }
}

impl PriceBook {
    /// An empty book in `currency` (ISO 4217).
    pub fn new(currency: &str) -> Result<PriceBook, CostError> {
        check_currency("price book", currency)?;
        Ok(PriceBook {
            currency: currency.to_string(),
            prices: Vec::new(),
            index: HashMap::new(),
        })
    }

    /// A book from `Pool` resources (name, spec); every pool must have a price, all in one
    /// currency.
    pub fn from_pools<'a>(
        pools: impl IntoIterator<Item = (&'a str, &'a PoolSpec)>,
    ) -> Result<PriceBook, CostError> {
        let mut book: Option<PriceBook> = None;
        for (name, spec) in pools {
            let price = PoolPrice::from_pool_spec(name, spec)?;
            let b = match book.as_mut() {
                Some(b) => b,
                None => book.insert(PriceBook::new(&price.currency)?),
            };
            b.add(price)?;
        }
        book.ok_or_else(|| CostError::arg("price book", "no pools given"))
    }

    /// Adds a price; fails on a bad price, a second price for the same pool and procurement,
    /// or another currency.
    pub fn add(&mut self, price: PoolPrice) -> Result<(), CostError> {
        price.validate()?;
        if price.currency != self.currency {
            return Err(CostError::CurrencyMismatch {
                what: format!("pool {:?}", price.pool),
                expected: self.currency.clone(),
                found: price.currency,
            });
        }
        let entry = self.index.entry(price.pool.clone()).or_default();
        let s = &mut entry[slot(price.procurement)];
        if s.is_some() {
            return Err(CostError::arg(
                format!("pool {:?}", price.pool),
                format!(
                    "a {} price is already set",
                    procurement_name(price.procurement)
                ),
            ));
        }
        *s = Some(self.prices.len());
        self.prices.push(price);
        Ok(())
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// Every price, in the order added.
    pub fn prices(&self) -> &[PoolPrice] {
        &self.prices
    }

    /// The price of a pool under a procurement, or `MissingPrice` naming both.
    pub fn get(&self, pool: &str, procurement: Procurement) -> Result<&PoolPrice, CostError> {
        self.index_of(pool, procurement).map(|i| &self.prices[i])
    }

    pub(crate) fn index_of(
        &self,
        pool: &str,
        procurement: Procurement,
    ) -> Result<usize, CostError> {
        self.index
            .get(pool)
            .and_then(|slots| slots[slot(procurement)])
            .ok_or_else(|| CostError::missing_price(pool, procurement))
    }
}
