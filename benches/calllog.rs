//! What the call log costs per call: appending one record's line and
//! syncing it (as `calllog` does for each call that ends), beside the
//! same append without the sync, in one run on the disk under `target/`.
//!
//! Usage: cargo bench --bench calllog     (ROUNDS=300 by default)

use std::io::Write;
use std::time::Instant;

use signalbox::calllog::{Files, KEEP, MAX_FILE_BYTES};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[at]
}

fn main() -> std::io::Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("calllog-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // A record of the size a group call with a door opened makes.
    let line = concat!(
        r#"{"call":"c1234","caller":"front-door","called":"flat-12","group":"flat-12","#,
        r#""rang":["anna","ben","flat-12-panel"],"answered_by":"ben","#,
        r#""started":"2026-12-03T14:02:00.000Z","answered":"2026-12-03T14:02:04.512Z","#,
        r#""ended":"2026-12-03T14:03:10.004Z","outcome":"answered","ended_by":"ben","#,
        r#""doors":[{"station":"front-door","door":"main","by":"ben","at":"2026-12-03T14:02:30.118Z"}]}"#,
        "\n"
    );
    let files = Files::new(&dir, MAX_FILE_BYTES, KEEP);
    let (mut file, mut size) = files.open()?;
    let mut synced = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        files.append(&mut file, &mut size, line.as_bytes())?;
        synced.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let mut plain_file = std::fs::File::create(dir.join("plain.log"))?;
    let mut plain = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        plain_file.write_all(line.as_bytes())?;
        plain.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let (synced_p50, plain_p50) = (median(synced.clone()), median(plain.clone()));
    println!(
        "call log: {rounds} records of {} bytes, {}",
        line.len(),
        dir.display()
    );
    println!("{:<28} {:>12} {:>12}", "", "p50 (µs)", "p99 (µs)");
    println!(
        "{:<28} {:>12.1} {:>12.1}",
        "append + sync (the log)",
        synced_p50,
        percentile(synced, 0.99)
    );
    println!(
        "{:<28} {:>12.1} {:>12.1}",
        "append without sync",
        plain_p50,
        percentile(plain, 0.99)
    );
    println!("ratio (p50): {:.0}x", synced_p50 / plain_p50.max(0.001));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
