//! The measures `backtest` and `calibrate` report, as pure functions of
//! scored and labelled observations. A *lower* score means *more* risk
//! everywhere here: an account is "flagged" at threshold `s` when its
//! score is `≤ s`.

use serde::Serialize;

/// ROC AUC: the probability that a random churner scores below a random
/// non-churner (ties count ½). Exact, by rank sums with tied ranks
/// averaged. `None` when either class is empty.
pub fn auc(scores: &[(f64, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut v: Vec<(f64, bool)> = scores.to_vec();
    // Ascending score: rank-sum of negatives (the ones that should score high).
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_neg = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        // Ranks i+1..=j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum_neg += avg * v[i..j].iter().filter(|s| !s.1).count() as f64;
        i = j;
    }
    let u = rank_sum_neg - (neg * (neg + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// PR AUC as **average precision** (no interpolation, the definition of
/// scikit-learn's `average_precision_score`), with churners as the
/// positives and the lowest scores first:
///
/// `AP = Σₖ (Rₖ − Rₖ₋₁) · Pₖ`
///
/// over the distinct scores `s₁ < s₂ < …`, where `Pₖ` and `Rₖ` are the
/// precision and recall of flagging every account scoring `≤ sₖ` (tied
/// scores enter together, so the result does not depend on how ties are
/// ordered). A random score gives about the churn rate; a perfect one 1.
/// `None` without churners.
pub fn average_precision(scores: &[(f64, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    if pos == 0 {
        return None;
    }
    let mut v: Vec<(f64, bool)> = scores.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut tp, mut flagged) = (0usize, 0usize);
    let mut ap = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        let mut new_tp = 0;
        while j < v.len() && v[j].0 == v[i].0 {
            new_tp += usize::from(v[j].1);
            j += 1;
        }
        tp += new_tp;
        flagged += j - i;
        if new_tp > 0 {
            ap += (new_tp as f64 / pos as f64) * (tp as f64 / flagged as f64);
        }
        i = j;
    }
    Some(ap)
}

/// The median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One tenth of the observations, by score (decile 1 = the lowest scores).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decile {
    pub decile: u8,
    pub min_score: f64,
    pub max_score: f64,
    pub observations: u64,
    pub churners: u64,
    pub churn_rate: f64,
}

/// Churn rate by score decile (calibration): observations sorted by score
/// (ties in the order given, which callers make deterministic), decile `d`
/// (0-based) holds positions `⌊n·d/10⌋ .. ⌊n·(d+1)/10⌋`. Empty deciles
/// (fewer than 10 observations) are left out.
pub fn deciles(scores: &[(f64, bool)]) -> Vec<Decile> {
    let mut v: Vec<(f64, bool)> = scores.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = v.len();
    (0..10)
        .filter_map(|d| {
            let part = &v[n * d / 10..n * (d + 1) / 10];
            let (first, last) = (part.first()?, part.last()?);
            let churners = part.iter().filter(|s| s.1).count() as u64;
            Some(Decile {
                decile: d as u8 + 1,
                min_score: first.0,
                max_score: last.0,
                observations: part.len() as u64,
                churners,
                churn_rate: churners as f64 / part.len() as f64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all (churner, non-churner) pairs.
    fn brute_auc(s: &[(f64, bool)]) -> f64 {
        let mut num = 0.0;
        let mut den = 0.0;
        for p in s.iter().filter(|x| x.1) {
            for n in s.iter().filter(|x| !x.1) {
                den += 1.0;
                if p.0 < n.0 {
                    num += 1.0;
                } else if p.0 == n.0 {
                    num += 0.5;
                }
            }
        }
        num / den
    }

    /// Average precision by its definition: every distinct score as a
    /// threshold, precision and recall of flagging everything at or below.
    fn brute_ap(s: &[(f64, bool)]) -> f64 {
        let mut thresholds: Vec<f64> = s.iter().map(|x| x.0).collect();
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        let pos = s.iter().filter(|x| x.1).count() as f64;
        let mut prev_recall = 0.0;
        let mut ap = 0.0;
        for t in thresholds {
            let flagged: Vec<_> = s.iter().filter(|x| x.0 <= t).collect();
            let tp = flagged.iter().filter(|x| x.1).count() as f64;
            let recall = tp / pos;
            ap += (recall - prev_recall) * tp / flagged.len() as f64;
            prev_recall = recall;
        }
        ap
    }

    const CASE: [(f64, bool); 8] = [
        (10.0, true),
        (20.0, false),
        (20.0, true),
        (35.5, false),
        (5.0, true),
        (70.0, false),
        (20.0, false),
        (90.0, true),
    ];

    #[test]
    fn auc_matches_brute_force_with_ties() {
        assert_eq!(auc(&CASE), Some(brute_auc(&CASE)));
        assert_eq!(auc(&[(1.0, true)]), None);
        assert_eq!(auc(&[(1.0, true), (2.0, false)]), Some(1.0));
        assert_eq!(auc(&[(3.0, true), (2.0, false)]), Some(0.0));
    }

    #[test]
    fn average_precision_by_hand_and_by_definition() {
        // Sorted: 5✓ | 10✓ | 20✓ 20✗ 20✗ | 35.5✗ | 70✗ | 90✓ ; 4 churners.
        // Thresholds adding churners: 5 (P 1/1), 10 (P 2/2), 20 (P 3/5),
        // 90 (P 4/8), each adding recall 1/4.
        let hand = 0.25 * (1.0 + 1.0 + 3.0 / 5.0 + 4.0 / 8.0);
        let ap = average_precision(&CASE).unwrap();
        assert!((ap - hand).abs() < 1e-12, "{ap} vs {hand}");
        assert!((ap - brute_ap(&CASE)).abs() < 1e-12);
        assert_eq!(average_precision(&[(1.0, false)]), None);
        assert_eq!(average_precision(&[(1.0, true), (2.0, false)]), Some(1.0));
        // Everything tied: the churn rate.
        assert_eq!(
            average_precision(&[(1.0, true), (1.0, false), (1.0, false), (1.0, false)]),
            Some(0.25)
        );
    }

    #[test]
    fn deciles_split_by_position() {
        let s: Vec<(f64, bool)> = (0..25).map(|i| (i as f64, i % 5 == 0)).collect();
        let d = deciles(&s);
        assert_eq!(d.len(), 10);
        assert_eq!(d.iter().map(|d| d.observations).sum::<u64>(), 25);
        assert_eq!(
            (d[0].min_score, d[0].max_score, d[0].churners),
            (0.0, 1.0, 1)
        );
        assert_eq!(deciles(&s[..3]).len(), 3);
        assert!(deciles(&[]).is_empty());
    }
}
