//! Shared by the ebb-hnsw tests: brute-force truth and recall.

#![allow(dead_code)]

use ebb_hnsw::Metric;

/// Distance as the index reports it.
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>(),
        Metric::Cosine => {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            1.0 - dot / (na * nb)
        }
        Metric::Dot => 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(),
    }
}

/// The exact k nearest of `points` (id, vector) to `q`.
pub fn brute_force(metric: Metric, points: &[(u64, &[f32])], q: &[f32], k: usize) -> Vec<u64> {
    let mut d: Vec<(f32, u64)> = points
        .iter()
        .map(|(id, v)| (distance(metric, q, v), *id))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().take(k).map(|(_, id)| id).collect()
}

/// |found ∩ truth| / |truth|.
pub fn recall(found: &[u64], truth: &[u64]) -> f64 {
    let hit = found.iter().filter(|id| truth.contains(id)).count();
    hit as f64 / truth.len().max(1) as f64
}
