//! Fast vs reference `encode_offsets` throughput (one thread) on every string of the JSON /
//! JSON Lines files under a directory (duplicates kept, file order).
//! `cargo run --release --no-default-features --example encode_bench -- TOKENIZER DATA_DIR [REPEATS [noref]]`

use std::path::{Path, PathBuf};

fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "tokenizers") {
            files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json" || x == "jsonl") {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let enc = sftfast::Encoder::from_path(Path::new(&args[1]))?;
    let mut paths = Vec::new();
    files(Path::new(&args[2]), &mut paths)?;
    paths.sort();
    let repeats: usize = args.get(3).map_or(Ok(2), |r| r.parse())?;
    let mut texts = Vec::new();
    for p in &paths {
        let raw = std::fs::read_to_string(p)?;
        match serde_json::from_str::<serde_json::Value>(&raw) {
            Ok(v) => strings(&v, &mut texts),
            Err(_) => {
                for line in raw.lines().filter(|l| !l.trim().is_empty()) {
                    strings(&serde_json::from_str(line)?, &mut texts);
                }
            }
        }
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "{} strings, {:.1} MB; fast path: {:?}",
        texts.len(),
        bytes as f64 / 1e6,
        enc.encode_fast_path_disabled_reason().unwrap_or("on")
    );
    let mut fast_s = f64::MAX;
    for pass in 0..repeats {
        let t = std::time::Instant::now();
        let mut n = 0usize;
        for s in &texts {
            n += enc.encode_offsets(s, false)?.0.len();
        }
        let secs = t.elapsed().as_secs_f64();
        fast_s = fast_s.min(secs);
        println!(
            "fast pass {pass}: {n} tokens, {:.1} MB/s",
            bytes as f64 / 1e6 / secs
        );
    }
    if args.get(4).is_some_and(|a| a == "noref") {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let mut n = 0usize;
    for s in &texts {
        n += enc.encode_offsets_reference(s, false)?.0.len();
    }
    let ref_s = t.elapsed().as_secs_f64();
    println!(
        "reference: {n} tokens, {:.1} MB/s",
        bytes as f64 / 1e6 / ref_s
    );
    println!("speedup (best fast pass): {:.1}x", ref_s / fast_s);
    Ok(())
}
