//! Count tokens of every line of a text file (JSON-escaped lines), for profiling the core.
//! `cargo run --release --no-default-features --example count_file -- TOKENIZER TEXTS.jsonl [REPEATS]`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let enc = sftfast::Encoder::from_path(std::path::Path::new(&args[1]))?;
    let raw = std::fs::read_to_string(&args[2])?;
    let texts: Vec<String> = raw
        .lines()
        .map(serde_json::from_str::<String>)
        .collect::<Result<_, _>>()?;
    let repeats: usize = args.get(3).map_or(Ok(1), |r| r.parse())?;
    let bytes: usize = texts.iter().map(String::len).sum();
    let rows: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    sftfast::parallel::set_num_threads(1)?;
    for _ in 0..repeats {
        let t = std::time::Instant::now();
        let counts = enc.count_batch(&rows, false)?;
        let total: u64 = counts.iter().flatten().map(|&c| u64::from(c)).sum();
        #[allow(clippy::cast_precision_loss)]
        let mbps = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
        println!("{total} tokens, {mbps:.1} MB/s");
    }
    Ok(())
}
