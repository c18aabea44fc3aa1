//! Statistics: percentiles and summaries of latencies.

use super::*;

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

/// p50/p99/max of nanosecond samples, in milliseconds.
pub(crate) fn summary_ms(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    json!({
        "n": samples.len(),
        "p50_ms": ms(percentile(samples, 50.0)),
        "p99_ms": ms(percentile(samples, 99.0)),
        "max_ms": ms(samples.last().copied().unwrap_or(0)),
    })
}

/// How many samples fall between each pair of edges (in ms), the key
/// naming the upper edge: shows steps such as the 1 s and 3 s of TCP SYN
/// retransmissions.
pub(crate) fn buckets_ms(samples: &[u64]) -> Value {
    const EDGES: [u64; 7] = [10, 100, 500, 1000, 2000, 3000, 5000];
    let mut counts = [0u64; EDGES.len() + 1];
    for &ns in samples {
        let ms = ns / 1_000_000;
        counts[EDGES
            .iter()
            .position(|&edge| ms < edge)
            .unwrap_or(EDGES.len())] += 1;
    }
    let mut out = serde_json::Map::new();
    for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let label = match EDGES.get(i) {
            Some(edge) => format!("<{edge}"),
            None => format!(">={}", EDGES[EDGES.len() - 1]),
        };
        out.insert(label, n.into());
    }
    Value::Object(out)
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
