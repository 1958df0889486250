//! Budgets (thresholds, actions, run-rate forecast), job approvals and GPU-hour quotas.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use plinth_types::spec::Procurement;
use serde::{Deserialize, Serialize};

use crate::alloc::Allocator;
use crate::error::{CostError, check_amount, check_currency};
use crate::price::PriceBook;
use crate::usage::{TAG_KEYS, Tags, UsageRecord, Window, hours_between};

/// The period a budget resets on (UTC; weeks start on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Week,
    Day,
}

impl Period {
    /// The name used in documents: `month`, `week` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Week => "week",
            Period::Day => "day",
        }
    }

    /// The period containing `now`.
    pub fn containing(self, now: DateTime<Utc>) -> Window {
        let day = now.date_naive();
        let (first, next) = match self {
            Period::Day => (day, day + Duration::days(1)),
            Period::Week => {
                let monday = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
                (monday, monday + Duration::days(7))
            }
            Period::Month => {
                let first = day.with_day(1).unwrap_or(day);
                let next = first
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(first + Duration::days(31));
                (first, next)
            }
        };
        Window {
            start: first.and_time(NaiveTime::MIN).and_utc(),
            end: next.and_time(NaiveTime::MIN).and_utc(),
        }
    }
}

/// What happens when a threshold is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Tell people (console, metric, webhook: the caller's channels).
    Notify,
    /// New jobs whose estimate is above the budget's `approvalOver` wait for approval.
    RequireApproval,
    /// Jobs outside production (`env` not `production`/`prod`) are not admitted.
    BlockNonProduction,
}

/// A percentage of the budget amount and its action.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub percent: f64,
    pub action: Action,
}

/// A spending limit over the charges whose tags match `scope`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    pub name: String,
    /// Tag key → value; every pair must match (empty: everything).
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
    pub period: Period,
    pub amount: f64,
    pub currency: String,
    pub thresholds: Vec<Threshold>,
    /// Under `require_approval`, jobs estimated above this need approval (default 0: all).
    #[serde(default)]
    pub approval_over: f64,
}

/// The `spec` of a `kind: Budget` resource; the resource's name becomes the budget's name.
///
/// ```yaml
/// kind: Budget
/// metadata: {name: ml-monthly}
/// spec:
///   scope: {team: ml}
///   period: month
///   amount: 10000
///   currency: USD
///   thresholds:
///     - {percent: 50, action: notify}
///     - {percent: 80, action: require_approval}
///     - {percent: 100, action: block_non_production}
///   approvalOver: 500
///   webhook: https://hooks.example.com/budget
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSpec {
    /// Tag key → value; every pair must match (empty: all spend).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scope: BTreeMap<String, String>,
    pub period: Period,
    pub amount: f64,
    /// ISO 4217 code, default USD; must be the currency of the pools' prices.
    #[serde(default = "default_currency")]
    pub currency: String,
    pub thresholds: Vec<Threshold>,
    /// Under `require_approval`, jobs estimated above this need approval (default 0: all).
    #[serde(default)]
    pub approval_over: f64,
    /// Where `notify` thresholds are also POSTed (http or https URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

fn default_currency() -> String {
    "USD".to_string()
}

impl BudgetSpec {
    /// The scope as `key=value` pairs joined by `sep`; `None` when it covers all spend.
    pub fn scope_text(&self, sep: &str) -> Option<String> {
        if self.scope.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self.scope.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(pairs.join(sep))
    }

    /// The budget this spec describes under `name`.
    pub fn to_budget(&self, name: &str) -> Budget {
        Budget {
            name: name.to_string(),
            scope: self.scope.clone(),
            period: self.period,
            amount: self.amount,
            currency: self.currency.clone(),
            thresholds: self.thresholds.clone(),
            approval_over: self.approval_over,
        }
    }

    /// Checks the budget (see [`Budget::validate`]) and the webhook URL.
    pub fn validate(&self, name: &str) -> Result<(), CostError> {
        self.to_budget(name).validate()?;
        if let Some(url) = &self.webhook {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
            if !ok {
                return Err(CostError::arg(
                    format!("budget {name:?} webhook"),
                    format!("{url:?} is not an http or https URL"),
                ));
            }
        }
        Ok(())
    }
}

/// Where one threshold stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdStatus {
    pub percent: f64,
    pub action: Action,
    /// percent × amount.
    pub amount: f64,
    pub crossed: bool,
    /// Not yet crossed but the run rate crosses it before the period ends: when.
    pub forecast_crossing: Option<DateTime<Utc>>,
}

/// A budget evaluated at `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub name: String,
    pub period: Window,
    pub now: DateTime<Utc>,
    pub amount: f64,
    pub currency: String,
    /// Allocated cost in scope from the period start to `now`.
    pub spent: f64,
    /// spent per hour elapsed.
    pub run_rate_per_hour: f64,
    /// spent + run rate × hours left: the period-end forecast.
    pub forecast: f64,
    pub percent_used: f64,
    pub percent_forecast: f64,
    pub thresholds: Vec<ThresholdStatus>,
    pub approval_over: f64,
    /// Human-readable warnings (crossed and forecast thresholds).
    pub warnings: Vec<String>,
}

impl BudgetStatus {
    /// Actions of the crossed thresholds, each once, in order of declaration.
    pub fn actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for t in self.thresholds.iter().filter(|t| t.crossed) {
            if !out.contains(&t.action) {
                out.push(t.action);
            }
        }
        out
    }

    /// Whether a new job estimated at `estimate` needs approval under this budget.
    pub fn requires_approval(&self, estimate: f64) -> bool {
        self.actions().contains(&Action::RequireApproval) && estimate > self.approval_over
    }

    /// Whether work tagged `env` is blocked (non-production after a `block_non_production`
    /// threshold was crossed).
    pub fn blocks(&self, env: Option<&str>) -> bool {
        self.actions().contains(&Action::BlockNonProduction) && !is_production(env)
    }
}

/// `production` and `prod` count as production.
pub fn is_production(env: Option<&str>) -> bool {
    matches!(env, Some("production") | Some("prod"))
}

impl Budget {
    /// Checks name, scope keys, amount, currency and thresholds.
    pub fn validate(&self) -> Result<(), CostError> {
        let what = format!("budget {:?}", self.name);
        if self.name.is_empty() {
            return Err(CostError::arg("budget", "the name is empty"));
        }
        for key in self.scope.keys() {
            if !TAG_KEYS.contains(&key.as_str()) {
                return Err(CostError::arg(
                    format!("{what} scope"),
                    format!("unknown tag {key:?} (expected team, project, env, model or owner)"),
                ));
            }
        }
        check_amount(|| format!("{what} amount"), self.amount)?;
        if self.amount == 0.0 {
            return Err(CostError::arg(format!("{what} amount"), "must be above 0"));
        }
        check_amount(|| format!("{what} approvalOver"), self.approval_over)?;
        check_currency(&what, &self.currency)?;
        if self.thresholds.is_empty() {
            return Err(CostError::arg(what, "has no thresholds"));
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            check_amount(|| format!("{what} thresholds[{i}].percent"), t.percent)?;
            if t.percent == 0.0 {
                return Err(CostError::arg(
                    format!("{what} thresholds[{i}].percent"),
                    "must be above 0",
                ));
            }
        }
        Ok(())
    }

    /// Whether charges with these tags count against this budget.
    pub fn matches(&self, tags: &Tags) -> bool {
        self.scope
            .iter()
            .all(|(k, v)| tags.get(k) == Some(v.as_str()))
    }

    /// Evaluates the budget at `now` from already-computed spend in the current period.
    pub fn status(&self, spent: f64, now: DateTime<Utc>) -> Result<BudgetStatus, CostError> {
        self.validate()?;
        check_amount(|| format!("budget {:?} spent", self.name), spent)?;
        let period = self.period.containing(now);
        let elapsed = hours_between(period.start, now);
        let left = hours_between(now, period.end);
        let rate = if elapsed > 0.0 { spent / elapsed } else { 0.0 };
        let forecast = spent + rate * left;
        let mut warnings = Vec::new();
        let thresholds = self
            .thresholds
            .iter()
            .map(|t| {
                let amount = self.amount * t.percent / 100.0;
                let crossed = spent >= amount;
                let forecast_crossing = if !crossed && rate > 0.0 {
                    let ms = ((amount - spent) / rate * 3_600_000.0).ceil() as i64;
                    let at = now + Duration::milliseconds(ms);
                    (at < period.end).then_some(at)
                } else {
                    None
                };
                let action = action_name(t.action);
                if crossed {
                    warnings.push(format!(
                        "budget {:?}: {:.2} {} spent, {}% threshold ({:.2}) crossed: {action}",
                        self.name, spent, self.currency, t.percent, amount
                    ));
                } else if let Some(at) = forecast_crossing {
                    warnings.push(format!(
                        "budget {:?}: at the current run rate ({:.2} {}/h) the {}% threshold ({:.2}) is crossed at {}: {action}",
                        self.name,
                        rate,
                        self.currency,
                        t.percent,
                        amount,
                        at.to_rfc3339()
                    ));
                }
                ThresholdStatus {
                    percent: t.percent,
                    action: t.action,
                    amount,
                    crossed,
                    forecast_crossing,
                }
            })
            .collect();
        Ok(BudgetStatus {
            name: self.name.clone(),
            period,
            now,
            amount: self.amount,
            currency: self.currency.clone(),
            spent,
            run_rate_per_hour: rate,
            forecast,
            percent_used: spent / self.amount * 100.0,
            percent_forecast: forecast / self.amount * 100.0,
            thresholds,
            approval_over: self.approval_over,
            warnings,
        })
    }

    /// Evaluates the budget at `now` over `records`: the allocated cost of matching records
    /// from the period start to `now` (idle cost is not charged to budgets).
    pub fn evaluate<'a>(
        &self,
        book: &PriceBook,
        records: impl IntoIterator<Item = &'a UsageRecord>,
        now: DateTime<Utc>,
    ) -> Result<BudgetStatus, CostError> {
        self.validate()?;
        if self.currency != book.currency() {
            return Err(CostError::CurrencyMismatch {
                what: format!("budget {:?}", self.name),
                expected: book.currency().to_string(),
                found: self.currency.clone(),
            });
        }
        let period = self.period.containing(now);
        let mut spent = 0.0;
        if now > period.start {
            let mut alloc = Allocator::new(book, Window::new(period.start, now)?);
            for r in records {
                if self.matches(&r.tags) {
                    alloc.allocate(r, |line| spent += line.total())?;
                }
            }
        }
        self.status(spent, now)
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Notify => "notify",
        Action::RequireApproval => "require_approval",
        Action::BlockNonProduction => "block_non_production",
    }
}

/// A job to be estimated before admission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEstimate {
    pub pool: String,
    pub procurement: Procurement,
    pub gpus: f64,
    pub max_runtime_hours: f64,
}

/// Whether a job must wait for approval, and its estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// GPUs × max runtime hours × price per GPU-hour.
    pub estimate: f64,
    pub currency: String,
    pub needs_approval: bool,
    /// Why (empty when no approval is needed).
    pub reasons: Vec<String>,
}

/// Estimates a job and decides whether it needs approval: when the estimate is above
/// `threshold` (a standing rule), or when a budget that applies to the job (`budgets`: the
/// statuses of the budgets whose scope matches the job) requires approval for it.
pub fn approval_decision(
    book: &PriceBook,
    job: &JobEstimate,
    threshold: Option<f64>,
    budgets: &[BudgetStatus],
) -> Result<ApprovalDecision, CostError> {
    check_amount(|| "job estimate gpus".to_string(), job.gpus)?;
    check_amount(
        || "job estimate max_runtime_hours".to_string(),
        job.max_runtime_hours,
    )?;
    let price = book.get(&job.pool, job.procurement)?;
    let estimate = job.gpus * job.max_runtime_hours * price.rates.gpu_hour;
    let mut reasons = Vec::new();
    if let Some(t) = threshold {
        check_amount(|| "approval threshold".to_string(), t)?;
        if estimate > t {
            reasons.push(format!(
                "estimate {estimate:.2} {} is above the approval threshold {t:.2}",
                book.currency()
            ));
        }
    }
    for b in budgets {
        if b.currency != book.currency() {
            return Err(CostError::CurrencyMismatch {
                what: format!("budget {:?}", b.name),
                expected: book.currency().to_string(),
                found: b.currency.clone(),
            });
        }
        if b.requires_approval(estimate) {
            reasons.push(format!(
                "budget {:?} is at {:.1}% and requires approval for jobs above {:.2}",
                b.name, b.percent_used, b.approval_over
            ));
        }
    }
    Ok(ApprovalDecision {
        estimate,
        currency: book.currency().to_string(),
        needs_approval: !reasons.is_empty(),
        reasons,
    })
}

/// A team's GPU-hour allowance per calendar month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuQuota {
    pub team: String,
    pub gpu_hours_per_month: f64,
}

/// The `spec` of a `kind: GpuQuota` resource: a team's GPU-hours per calendar month (UTC),
/// enforced when jobs are admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuQuotaSpec {
    pub team: String,
    pub gpu_hours_per_month: f64,
}

impl GpuQuotaSpec {
    /// Checks the amount (finite, not negative).
    pub fn validate(&self) -> Result<(), CostError> {
        check_amount(
            || format!("gpu quota of team {:?}: gpuHoursPerMonth", self.team),
            self.gpu_hours_per_month,
        )?;
        Ok(())
    }
}

/// Whether a new job fits in a quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaDecision {
    pub fits: bool,
    pub used: f64,
    pub requested: f64,
    pub limit: f64,
    /// limit − used, never below 0.
    pub remaining: f64,
}

/// GPU-hours charged to `team` in the month containing `now` (max(request, usage) GPUs ×
/// hours inside the month, up to `now`).
pub fn gpu_hours_used<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
    team: &str,
    now: DateTime<Utc>,
) -> Result<f64, CostError> {
    let month = Period::Month.containing(now);
    let mut used = 0.0;
    for r in records {
        if r.tags.team.as_deref() != Some(team) {
            continue;
        }
        r.validate()?;
        let start = r.start.max(month.start);
        let end = r.end.min(month.end).min(now);
        if start < end {
            used += r.request.max(r.usage).gpus * hours_between(start, end);
        }
    }
    Ok(used)
}

/// Whether a job of `gpus` × `max_runtime_hours` fits in the team's quota for this month,
/// given the GPU-hours already `used` (see `gpu_hours_used`).
pub fn check_quota(
    quota: &GpuQuota,
    used: f64,
    gpus: f64,
    max_runtime_hours: f64,
) -> Result<QuotaDecision, CostError> {
    let what = |f: &str| format!("gpu quota of team {:?}: {f}", quota.team);
    let limit = check_amount(|| what("gpu_hours_per_month"), quota.gpu_hours_per_month)?;
    check_amount(|| what("used"), used)?;
    check_amount(|| what("gpus"), gpus)?;
    check_amount(|| what("max_runtime_hours"), max_runtime_hours)?;
    let requested = gpus * max_runtime_hours;
    Ok(QuotaDecision {
        fits: used + requested <= limit,
        used,
        requested,
        limit,
        remaining: (limit - used).max(0.0),
    })
}
