//! JSON Lines validation: find the lines a JSON reader would fail on, with line numbers.
//!
//! Polars' NDJSON reader stops on the first bad line without saying which. This pass reads the
//! file once (memory: an 8 MB block of lines), parses each line with serde_json (a visitor that
//! infers the column types, no allocation per value, see [`crate::jsontype`]), and either
//! reports the first problems (strict mode) or writes the good lines to a new file and returns
//! the bad ones with their reasons, so nothing is lost silently.

use std::fs::File;
use std::io::{BufWriter, Write};
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
    // No separate UTF-8 pass while the type is plain: serde_json checks every string it reads
    // and any other byte beyond ASCII is a syntax error, so invalid UTF-8 fails the parse and
    // is named below. Under a mixed type, values are skipped unchecked: check the line.
    match infer_line(l, t) {
        Ok(()) if !t.is_plain() && std::str::from_utf8(l).is_err() => {
            (Verdict::Bad("invalid_utf8".into()), true)
        }
        Ok(()) => (Verdict::Object, false),
        // What `IgnoredAny` accepts stays a row (e.g. `1e400`, which typed parsing refuses);
        // the recount below then finds no type for it and leaves the schema to Polars.
        Err(e) => match check(l) {
            None => (Verdict::Object, true),
            Some(reason) if reason == "invalid_utf8" => (Verdict::Bad(reason), true),
            Some(_) => (Verdict::Bad(format!("invalid_json: {e}")), true),
        },
    }
}

/// Verdicts on a run of lines and the type of its object lines.
fn verdicts(lines: &[&[u8]]) -> (Vec<Verdict>, JType) {
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

/// One pass over `path`: bad, blank and non-object lines and the line count; the object lines
/// (and, unless `objects_only`, the other valid non-blank ones) go to `good_out` when given.
///
/// # Errors
/// [`SftError::Io`] naming the file when reading or writing fails.
pub fn scan_jsonl(path: &Path, good_out: Option<&Path>, objects_only: bool) -> Result<JsonlScan> {
    // Bytes read at a time; lines are slices of the block (no copy per line).
    scan_blocks(path, good_out, objects_only, 8 << 20)
}

fn scan_blocks(
    path: &Path,
    good_out: Option<&Path>,
    objects_only: bool,
    block: usize,
) -> Result<JsonlScan> {
    use std::io::Read;
    let io = |e| SftError::io(format!("reading {}", path.display()), e);
    let mut f =
        File::open(path).map_err(|e| SftError::io(format!("opening {}", path.display()), e))?;
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
    let mut buf: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof || !buf.is_empty() {
        // Fill to a block (more while no newline is in it: a line longer than a block).
        let mut want = block.max(1);
        let cut = loop {
            while !eof && buf.len() < want {
                let at = buf.len();
                buf.resize(want, 0);
                let n = f.read(&mut buf[at..]).map_err(io)?;
                buf.truncate(at + n);
                eof = n == 0;
            }
            match memchr::memrchr(b'\n', &buf) {
                _ if eof => break buf.len(),
                Some(i) => break i + 1,
                None => want = buf.len() * 2,
            }
        };
        if cut == 0 {
            break; // an empty file
        }
        let lines: Vec<&[u8]> = buf[..cut]
            .strip_suffix(b"\n")
            .unwrap_or(&buf[..cut])
            .split(|&b| b == b'\n')
            .map(|l| {
                let end = l.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
                &l[..end]
            })
            .collect();
        parallel::check_cancel()?;
        let parts: Vec<(Vec<Verdict>, JType)> =
            parallel::install(|| lines.par_chunks(512).map(verdicts).collect())?;
        let mut all = Vec::with_capacity(lines.len());
        for (v, t) in parts {
            all.extend(v);
            scan.schema.merge(t);
        }
        for (l, v) in lines.iter().zip(all) {
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
        drop(lines);
        buf.drain(..cut);
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
        let bad = scan_jsonl(&src, Some(&out), false).unwrap().bad;
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
    fn any_block_size_scans_alike() {
        let dir = std::env::temp_dir().join(format!("sftfast-jsonl-blk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("in.jsonl");
        let text = "{\"a\": 1, \"b\": \"中文\"}\r\n\n[1]\n{bad\n  {\"a\": 2.5}\n\n{\"b\": null}";
        for tail in ["", "\n", "\n\n"] {
            std::fs::write(&src, format!("{text}{tail}")).unwrap();
            let (out1, out2) = (dir.join("o1"), dir.join("o2"));
            let want = scan_jsonl(&src, Some(&out1), true).unwrap();
            for block in [1, 2, 3, 7, 16, 64] {
                let got = scan_blocks(&src, Some(&out2), true, block).unwrap();
                assert_eq!(got, want, "block {block}");
                assert_eq!(std::fs::read(&out2).unwrap(), std::fs::read(&out1).unwrap());
            }
            assert_eq!(want.lines, count_lines(&src).unwrap());
        }
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
        // Invalid UTF-8 where a mixed type skips values unchecked is still found.
        std::fs::write(
            &src,
            b"{\"a\": 1}\n{\"a\": \"x\"}\n{\"a\": [\"\xff\"]}\n{\"\xff\": 1}",
        )
        .unwrap();
        let scan = scan_jsonl(&src, None, true).unwrap();
        assert_eq!(
            scan.bad
                .iter()
                .map(|b| (b.line, b.reason.as_str()))
                .collect::<Vec<_>>(),
            [(3, "invalid_utf8"), (4, "invalid_utf8")]
        );
        // Line ends: CR before LF, no LF at the end, an empty file.
        std::fs::write(&src, b"{\"a\": 1}\r\r\n\r\n{\"a\": 2}").unwrap();
        let scan = scan_jsonl(&src, None, true).unwrap();
        assert_eq!((scan.lines, scan.blank.as_slice()), (3, &[2][..]));
        std::fs::write(&src, b"").unwrap();
        assert_eq!(scan_jsonl(&src, None, true).unwrap().lines, 0);
        // A number only typed parsing refuses: still a row, and no schema of ours.
        std::fs::write(&src, b"{\"a\": 1}\n{\"a\": 1e400}\n").unwrap();
        let scan = scan_jsonl(&src, None, true).unwrap();
        assert!(scan.bad.is_empty());
        assert!(!scan.schema.is_plain());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
