//! JSON Lines validation: find the lines a JSON reader would fail on, with line numbers.
//!
//! Polars' NDJSON reader stops on the first bad line without saying which. This pass reads the
//! file once (memory: one line at a time plus a block of lines in flight), parses each line with
//! serde_json (`IgnoredAny`, no allocation per value), and either reports the first problems
//! (strict mode) or writes the good lines to a new file and returns the bad ones with their
//! reasons, so nothing is lost silently.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Result, SftError};
use crate::jsontype::{infer_line, JType};
use crate::parallel;

/// A line that is not one JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the file.
    pub line: usize,
    /// Why it failed (`invalid_utf8`, `invalid_json: …`).
    pub reason: String,
}

fn check(line: &[u8]) -> Option<String> {
    if std::str::from_utf8(line).is_err() {
        return Some("invalid_utf8".into());
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
        Ok(_) => None,
        Err(e) => Some(format!("invalid_json: {e}")),
    }
}

/// What one pass over a JSON Lines file found (line numbers 1-based, in order).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlScan {
    /// Lines that are not one JSON value.
    pub bad: Vec<BadLine>,
    /// Lines of nothing but ASCII whitespace.
    pub blank: Vec<usize>,
    /// Valid JSON lines that are not objects (`[1, 2]`, `"x"`, `null`).
    pub not_object: Vec<usize>,
    /// Lines in the file (a last line without `\n` counts).
    pub lines: usize,
    /// The type of the object lines (see [`crate::jsontype`]).
    pub schema: JType,
}

enum Verdict {
    Object,
    Blank,
    NotObject,
    Bad(String),
}

/// The verdict on one line; an object line also widens `t` (`true` when a bad object line
/// may have widened it before its error).
fn verdict(l: &[u8], t: &mut JType) -> (Verdict, bool) {
    let Some(i) = l.iter().position(|b| !b.is_ascii_whitespace()) else {
        return (Verdict::Blank, false);
    };
    if l[i] != b'{' {
        return match check(l) {
            Some(reason) => (Verdict::Bad(reason), false),
            None => (Verdict::NotObject, false),
        };
    }
    if std::str::from_utf8(l).is_err() {
        return (Verdict::Bad("invalid_utf8".into()), false);
    }
    match infer_line(l, t) {
        Ok(()) => (Verdict::Object, false),
        // What `IgnoredAny` accepts stays a row (e.g. `1e400`, which typed parsing refuses);
        // the recount below then finds no type for it and leaves the schema to Polars.
        Err(e) => match check(l) {
            None => (Verdict::Object, true),
            Some(_) => (Verdict::Bad(format!("invalid_json: {e}")), true),
        },
    }
}

/// Verdicts on a run of lines and the type of its object lines.
fn verdicts(lines: &[Vec<u8>]) -> (Vec<Verdict>, JType) {
    let mut t = JType::Null;
    let mut dirty = false;
    let v: Vec<Verdict> = lines
        .iter()
        .map(|l| {
            let (v, d) = verdict(l, &mut t);
            dirty |= d;
            v
        })
        .collect();
    if dirty {
        // Again over the good object lines only.
        t = JType::Null;
        for (l, v) in lines.iter().zip(&v) {
            if matches!(v, Verdict::Object) && infer_line(l, &mut t).is_err() {
                t = JType::Mixed;
                break;
            }
        }
    }
    (v, t)
}

/// Scan `path`; write the valid non-blank lines to `good_out` (when given) and return the bad
/// ones, in order.
///
/// # Errors
/// [`SftError::Io`] naming the file when reading or writing fails.
pub fn split_jsonl(path: &Path, good_out: Option<&Path>) -> Result<Vec<BadLine>> {
    Ok(scan_jsonl(path, good_out, false)?.bad)
}

/// One pass over `path`: bad, blank and non-object lines and the line count; the object lines
/// (and, unless `objects_only`, the other valid non-blank ones) go to `good_out` when given.
///
/// # Errors
/// [`SftError::Io`] naming the file when reading or writing fails.
pub fn scan_jsonl(path: &Path, good_out: Option<&Path>, objects_only: bool) -> Result<JsonlScan> {
    const BLOCK: usize = 8192;
    let f = File::open(path).map_err(|e| SftError::io(format!("opening {}", path.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut writer = match good_out {
        Some(p) => {
            Some(BufWriter::new(File::create(p).map_err(|e| {
                SftError::io(format!("creating {}", p.display()), e)
            })?))
        }
        None => None,
    };
    let mut scan = JsonlScan {
        bad: Vec::new(),
        blank: Vec::new(),
        not_object: Vec::new(),
        lines: 0,
        schema: JType::Null,
    };
    loop {
        let mut block: Vec<Vec<u8>> = Vec::with_capacity(BLOCK);
        for _ in 0..BLOCK {
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| SftError::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            block.push(buf);
        }
        if block.is_empty() {
            break;
        }
        parallel::check_cancel()?;
        let parts: Vec<(Vec<Verdict>, JType)> =
            parallel::install(|| block.par_chunks(512).map(verdicts).collect())?;
        let mut all = Vec::with_capacity(block.len());
        for (v, t) in parts {
            all.extend(v);
            scan.schema.merge(t);
        }
        for (l, v) in block.iter().zip(all) {
            scan.lines += 1;
            let keep = match v {
                Verdict::Bad(reason) => {
                    scan.bad.push(BadLine {
                        line: scan.lines,
                        reason,
                    });
                    false
                }
                Verdict::Blank => {
                    scan.blank.push(scan.lines);
                    false
                }
                Verdict::NotObject => {
                    scan.not_object.push(scan.lines);
                    !objects_only
                }
                Verdict::Object => true,
            };
            if let (true, Some(w)) = (keep, writer.as_mut()) {
                w.write_all(l)
                    .and_then(|()| w.write_all(b"\n"))
                    .map_err(|e| SftError::io("writing cleaned JSON Lines", e))?;
            }
        }
    }
    if let Some(mut w) = writer {
        w.flush()
            .map_err(|e| SftError::io("writing cleaned JSON Lines", e))?;
    }
    Ok(scan)
}

/// Number of lines in a file (a last line without `\n` counts), read in 1 MiB blocks.
///
/// # Errors
/// [`SftError::Io`] naming the file.
pub fn count_lines(path: &Path) -> Result<usize> {
    use std::io::Read;
    let mut f =
        File::open(path).map_err(|e| SftError::io(format!("opening {}", path.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (0usize, b'\n');
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| SftError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        last = buf[n - 1];
    }
    Ok(lines + usize::from(last != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_bad_lines_and_keeps_good_ones() {
        let dir = std::env::temp_dir().join(format!("sftfast-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("in.jsonl");
        std::fs::write(&src, b"{\"a\": 1}\n{bad\n\n{\"a\": \"\xff\"}\n{\"a\": 2}\n").unwrap();
        let out = dir.join("out.jsonl");
        let bad = split_jsonl(&src, Some(&out)).unwrap();
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 4]);
        assert!(bad[0].reason.starts_with("invalid_json"));
        assert_eq!(bad[1].reason, "invalid_utf8");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"a\": 1}\n{\"a\": 2}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_scan_finds_blank_and_non_object_lines() {
        let dir = std::env::temp_dir().join(format!("sftfast-jsonl-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("in.jsonl");
        std::fs::write(
            &src,
            b"{\"a\": 1}\n \t\n[1, 2]\n{\"c\": \"x\", bad\n  {\"b\": 2}\r\nnull\n\n\"x\"",
        )
        .unwrap();
        let out = dir.join("out.jsonl");
        let scan = scan_jsonl(&src, Some(&out), true).unwrap();
        assert_eq!(scan.lines, 8);
        assert_eq!(scan.blank, vec![2, 7]);
        assert_eq!(scan.not_object, vec![3, 6, 8]);
        assert_eq!(scan.bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![4]);
        // `{"c": "x", bad` starts like an object: what it showed before failing does not count.
        let int = |n: &str| (n.to_string(), JType::Int);
        assert_eq!(scan.schema, JType::Struct(vec![int("a"), int("b")]));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"a\": 1}\n  {\"b\": 2}\n"
        );
        assert_eq!(
            scan_jsonl(&src, None, false).unwrap().lines,
            count_lines(&src).unwrap()
        );
        // A number only typed parsing refuses: still a row, and no schema of ours.
        std::fs::write(&src, b"{\"a\": 1}\n{\"a\": 1e400}\n").unwrap();
        let scan = scan_jsonl(&src, None, true).unwrap();
        assert!(scan.bad.is_empty());
        assert!(!scan.schema.is_plain());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
