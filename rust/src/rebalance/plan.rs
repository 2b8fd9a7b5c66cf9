//! Mix targets: how many units (rows, tokens or label tokens) each category gets.
//!
//! With `n_i` the size of category `i`, `k` categories, a budget `B` and a repeat cap `r`
//! (`max_epochs`), a method gives real quotas `q_i ≤ r·n_i`:
//!
//! - `proportional`: `q_i ∝ n_i`, summing to `B` (default: the total, i.e. unchanged);
//! - `cap`: `q_i = min(C, r·n_i, max(n_i, F))` with cap `C` and optional floor `F` (no budget;
//!   without a floor this is `min(C, r·n_i)`);
//! - `temperature`: `q_i ∝ n_i^(1/T)`, summing to `B`;
//! - `unimax` (Chung et al. 2023): categories from smallest to largest,
//!   `q_i = min(r·n_i, B_remaining / (k − i))`, `i` counted from 0;
//! - `weights`: `q_i ∝ w_i`, summing to `B`;
//! - `counts`: `q_i` given.
//!
//! Proportional quotas that would exceed `r·n_i` are capped and the excess is shared by the
//! others in proportion ("water-filling": sort by `cap_i / p_i`, one pass, O(k log k)), so the
//! sum is still `B` when `Σ r·n_i ≥ B`, and a clear error says by how much it is not otherwise.
//! Integer targets come from the largest-remainder method: floors, then one more unit to the
//! largest fractional parts (ties to the lower category index), never above a cap, so the
//! targets sum exactly to the rounded sum of the quotas. Pure arithmetic: deterministic.

use crate::error::{Result, SftError};

/// How targets are derived from category sizes.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Shares as in the data, scaled to the budget.
    Proportional,
    /// `min(cap, r·n, max(n, floor))` units per category.
    Cap {
        /// Most units a category keeps (or is up-sampled to).
        cap: u64,
        /// Categories under this size are up-sampled towards it (at most `r` epochs).
        floor: Option<u64>,
    },
    /// `p ∝ n^(1/T)`: `T = 1` is proportional, larger `T` flattens the mix.
    Temperature(f64),
    /// UniMax: uniform over categories, at most `r` epochs each.
    Unimax,
    /// `p ∝ w`, one weight per category (same order as the sizes).
    Weights(Vec<f64>),
    /// Exact units per category (same order as the sizes).
    Counts(Vec<u64>),
}

impl Method {
    /// The method's name as the API spells it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Method::Proportional => "proportional",
            Method::Cap { .. } => "cap",
            Method::Temperature(_) => "temperature",
            Method::Unimax => "unimax",
            Method::Weights(_) => "weights",
            Method::Counts(_) => "counts",
        }
    }
}

/// A method with its budget and repeat cap.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSpec {
    /// The method.
    pub method: Method,
    /// Total units wanted; `None` = the input total (for the methods that use a budget).
    pub budget: Option<u64>,
    /// Most epochs (copies) of a category's units, `≥ 1`.
    pub max_epochs: f64,
}

/// Integer targets, one per category, for `sizes` (units per category; `names` for messages).
///
/// # Errors
/// [`SftError::Config`] for an invalid parameter (naming it and the value received), a budget
/// that the repeat cap makes unreachable, or counts above a category's cap.
pub fn targets(sizes: &[u64], names: &[String], spec: &PlanSpec) -> Result<Vec<u64>> {
    let r = spec.max_epochs;
    if !(r.is_finite() && r >= 1.0) {
        return Err(SftError::Config(format!(
            "max_epochs: expected a finite number >= 1, got {r}"
        )));
    }
    #[allow(clippy::cast_precision_loss)]
    let n: Vec<f64> = sizes.iter().map(|&x| x as f64).collect();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let caps: Vec<u64> = n.iter().map(|&x| (x * r).floor() as u64).collect();
    let total: u64 = sizes.iter().sum();
    let budget = spec.budget.unwrap_or(total);
    let uses_budget = !matches!(spec.method, Method::Cap { .. } | Method::Counts(_));
    if !uses_budget && spec.budget.is_some() {
        return Err(SftError::Config(format!(
            "budget: method {:?} takes no budget (its targets follow from its own parameters)",
            spec.method.name()
        )));
    }
    match &spec.method {
        Method::Cap { cap, floor } => Ok(sizes
            .iter()
            .zip(&caps)
            .map(|(&ni, &ci)| (*cap).min(ci).min(ni.max(floor.unwrap_or(u64::MAX))))
            .collect()),
        Method::Counts(counts) => {
            check_len(counts.len(), sizes.len(), "counts")?;
            for (i, (&c, &cap)) in counts.iter().zip(&caps).enumerate() {
                if c > cap {
                    return Err(SftError::Config(format!(
                        "counts[{:?}]: {c} units asked, but the category has {} and \
                         max_epochs={r} allows at most {cap}",
                        names[i], sizes[i]
                    )));
                }
            }
            Ok(counts.clone())
        }
        Method::Proportional => water_fill_rounded(&n, &caps, budget, r),
        Method::Temperature(t) => {
            if !(t.is_finite() && *t > 0.0) {
                return Err(SftError::Config(format!(
                    "temperature: expected a finite number > 0, got {t}"
                )));
            }
            // In log space: n^(1/T) overflows for large n and small T.
            let top = n
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x.ln())
                .fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = n
                .iter()
                .map(|&x| {
                    if x > 0.0 {
                        ((x.ln() - top) / t).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            water_fill_rounded(&p, &caps, budget, r)
        }
        Method::Weights(w) => {
            check_len(w.len(), sizes.len(), "weights")?;
            if let Some((i, x)) = w
                .iter()
                .enumerate()
                .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
            {
                return Err(SftError::Config(format!(
                    "weights[{:?}]: expected a finite number >= 0, got {x}",
                    names[i]
                )));
            }
            if w.iter().sum::<f64>() <= 0.0 {
                return Err(SftError::Config("weights: at least one must be > 0".into()));
            }
            water_fill_rounded(w, &caps, budget, r)
        }
        Method::Unimax => {
            let mut order: Vec<usize> = (0..sizes.len()).collect();
            order.sort_by_key(|&i| (sizes[i], i));
            let k = order.len();
            #[allow(clippy::cast_precision_loss)]
            let mut remaining = budget as f64;
            let mut q = vec![0.0; k];
            for (pos, &i) in order.iter().enumerate() {
                #[allow(clippy::cast_precision_loss)]
                let share = remaining / (k - pos) as f64;
                #[allow(clippy::cast_precision_loss)]
                let qi = (caps[i] as f64).min(share).max(0.0);
                q[i] = qi;
                remaining -= qi;
            }
            let sum: f64 = q.iter().sum();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let target_sum = (sum.round() as u64).min(budget);
            Ok(largest_remainder(&q, &caps, target_sum))
        }
    }
}

fn check_len(got: usize, want: usize, what: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(SftError::Config(format!(
            "{what}: expected one value per category ({want}), got {got}"
        )))
    }
}

/// Quotas `q_i = min(cap_i, λ·p_i)` summing to `budget`, rounded to integers.
fn water_fill_rounded(p: &[f64], caps: &[u64], budget: u64, r: f64) -> Result<Vec<u64>> {
    let reachable: u64 = p
        .iter()
        .zip(caps)
        .filter(|(&pi, _)| pi > 0.0)
        .map(|(_, &c)| c)
        .sum();
    if reachable < budget {
        return Err(SftError::Config(format!(
            "budget: {budget} units asked, but with max_epochs={r} the categories that get a \
             share can supply at most {reachable}; lower the budget or raise max_epochs"
        )));
    }
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i] > 0.0).collect();
    #[allow(clippy::cast_precision_loss)]
    let ratio = |i: usize| caps[i] as f64 / p[i];
    order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(a.cmp(&b)));
    let mut q = vec![0.0; p.len()];
    #[allow(clippy::cast_precision_loss)]
    let mut remaining = budget as f64;
    let mut p_rest: f64 = order.iter().map(|&i| p[i]).sum();
    let mut start = 0;
    for (pos, &i) in order.iter().enumerate() {
        if ratio(i) * p_rest <= remaining {
            #[allow(clippy::cast_precision_loss)]
            let c = caps[i] as f64;
            q[i] = c;
            remaining -= c;
            p_rest -= p[i];
            start = pos + 1;
        } else {
            break;
        }
    }
    for &i in &order[start..] {
        q[i] = if p_rest > 0.0 {
            remaining * p[i] / p_rest
        } else {
            0.0
        };
    }
    Ok(largest_remainder(&q, caps, budget))
}

/// Integers `b_i ∈ {⌊q_i⌋, ⌈q_i⌉}`, `b_i ≤ cap_i`, summing to `sum` (when the caps allow):
/// floors first, then one more unit each to the largest fractional parts, ties to the lower
/// index. Float error can leave the floors a unit off; the loop absorbs it.
#[must_use]
pub fn largest_remainder(q: &[f64], caps: &[u64], sum: u64) -> Vec<u64> {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut b: Vec<u64> = q
        .iter()
        .zip(caps)
        .map(|(&x, &c)| (x.max(0.0).floor() as u64).min(c))
        .collect();
    let mut have: u64 = b.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let frac = |i: usize| q[i] - b[i] as f64;
    let mut order: Vec<usize> = (0..q.len()).collect();
    order.sort_by(|&x, &y| frac(y).total_cmp(&frac(x)).then(x.cmp(&y)));
    while have < sum {
        let mut moved = false;
        for &i in &order {
            if have >= sum {
                break;
            }
            if b[i] < caps[i] {
                b[i] += 1;
                have += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    while have > sum {
        // Only float error gets here: take back from the smallest fractional parts.
        let Some(&i) = order.iter().rev().find(|&&i| b[i] > 0) else {
            break;
        };
        b[i] -= 1;
        have -= 1;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    fn spec(method: Method, budget: Option<u64>, max_epochs: f64) -> PlanSpec {
        PlanSpec {
            method,
            budget,
            max_epochs,
        }
    }

    #[test]
    fn unimax_hand_worked() {
        // Sizes 10, 100, 1000, 10000; B = 4000, N = 4.
        // Smallest first: 10 → min(40, 4000/4 = 1000) = 40, remaining 3960;
        // 100 → min(400, 3960/3 = 1320) = 400, remaining 3560;
        // 1000 → min(4000, 3560/2 = 1780) = 1780, remaining 1780;
        // 10000 → min(40000, 1780/1) = 1780.
        let t = targets(
            &[1000, 10, 10_000, 100],
            &names(4),
            &spec(Method::Unimax, Some(4000), 4.0),
        )
        .unwrap();
        assert_eq!(t, vec![1780, 40, 1780, 400]);
        assert_eq!(t.iter().sum::<u64>(), 4000);
    }

    #[test]
    fn unimax_fractional_rounds_to_budget() {
        let t = targets(&[7, 7, 7], &names(3), &spec(Method::Unimax, Some(10), 4.0)).unwrap();
        assert_eq!(t.iter().sum::<u64>(), 10);
        assert!(t.iter().all(|&x| x == 3 || x == 4), "{t:?}");
    }

    #[test]
    fn unimax_all_capped_stays_under_budget() {
        let t = targets(&[1, 2], &names(2), &spec(Method::Unimax, Some(100), 2.0)).unwrap();
        assert_eq!(t, vec![2, 4]);
    }

    #[test]
    fn proportional_scales_and_sums() {
        let t = targets(
            &[1, 2, 7],
            &names(3),
            &spec(Method::Proportional, Some(5), 1.0),
        )
        .unwrap();
        // 0.5, 1.0, 3.5 → floors 0,1,3 (sum 4), one more to the largest fraction (ties → index 0).
        assert_eq!(t, vec![1, 1, 3]);
    }

    #[test]
    fn temperature_flattens_and_caps() {
        // T = ∞-like (large): nearly uniform; cap r·n for the tiny category.
        let t = targets(
            &[10, 1000, 1000],
            &names(3),
            &spec(Method::Temperature(1e9), Some(900), 2.0),
        )
        .unwrap();
        assert_eq!(t, vec![20, 440, 440]);
        let t1 = targets(
            &[10, 1000, 1000],
            &names(3),
            &spec(Method::Temperature(1.0), Some(2010), 1.0),
        )
        .unwrap();
        assert_eq!(t1, vec![10, 1000, 1000]);
    }

    #[test]
    fn temperature_half_squares_sizes() {
        // p ∝ n^2 with T = 0.5: 1, 4 → 1/5 and 4/5 of 50.
        let t = targets(
            &[10, 20],
            &names(2),
            &spec(Method::Temperature(0.5), Some(25), 4.0),
        )
        .unwrap();
        assert_eq!(t, vec![5, 20]);
    }

    #[test]
    fn temperature_small_t_does_not_overflow() {
        let t = targets(
            &[100_000, 50_000, 10],
            &names(3),
            &spec(Method::Temperature(0.01), Some(1000), 1.0),
        )
        .unwrap();
        assert_eq!(t, vec![1000, 0, 0]);
    }

    #[test]
    fn cap_with_and_without_floor() {
        let m = Method::Cap {
            cap: 100,
            floor: None,
        };
        let t = targets(&[5, 50, 500], &names(3), &spec(m, None, 4.0)).unwrap();
        assert_eq!(t, vec![20, 100, 100]);
        let m = Method::Cap {
            cap: 100,
            floor: Some(10),
        };
        let t = targets(&[5, 50, 500], &names(3), &spec(m, None, 4.0)).unwrap();
        assert_eq!(t, vec![10, 50, 100]);
    }

    #[test]
    fn weights_and_counts() {
        let t = targets(
            &[100, 100, 100],
            &names(3),
            &spec(Method::Weights(vec![1.0, 1.0, 2.0]), Some(100), 1.0),
        )
        .unwrap();
        assert_eq!(t, vec![25, 25, 50]);
        let t = targets(
            &[100, 100],
            &names(2),
            &spec(Method::Counts(vec![3, 200]), None, 2.0),
        )
        .unwrap();
        assert_eq!(t, vec![3, 200]);
        let e = targets(
            &[100, 100],
            &names(2),
            &spec(Method::Counts(vec![3, 201]), None, 2.0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("counts[\"c1\"]"), "{e}");
    }

    #[test]
    fn unreachable_budget_is_a_clear_error() {
        let e = targets(
            &[10, 10],
            &names(2),
            &spec(Method::Proportional, Some(50), 2.0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at most 40"), "{e}");
    }

    #[test]
    fn largest_remainder_sums_exactly() {
        let q = [0.3, 0.3, 0.4, 2.0];
        assert_eq!(largest_remainder(&q, &[9, 9, 9, 9], 3), vec![0, 0, 1, 2]);
        assert_eq!(largest_remainder(&q, &[9, 9, 0, 9], 3), vec![1, 0, 0, 2]);
    }
}
