//! The `.npy` container (NumPy format 1.0) for one-dimensional little-endian arrays.
//!
//! Shards are plain `.npy` files so that `numpy.load(path, mmap_mode="r")` reads them without
//! sftfast. We write only what we need: version 1.0, a C-order 1-D array of `<u4`, `<i4` or
//! `<u8`, the header padded to 64 bytes so the data is aligned for memory mapping. The reader
//! accepts exactly that shape and says what it found otherwise.

use crate::error::{Result, SftError};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element types a shard file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<u4`: token ids.
    U32,
    /// `<i4`: labels (−100 = not learned).
    I32,
    /// `<u8`: offsets and sample ids.
    U64,
}

impl Dtype {
    fn descr(self) -> &'static str {
        match self {
            Dtype::U32 => "<u4",
            Dtype::I32 => "<i4",
            Dtype::U64 => "<u8",
        }
    }

    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Dtype::U32 | Dtype::I32 => 4,
            Dtype::U64 => 8,
        }
    }
}

/// The header of a 1-D array of `len` elements; its length is a multiple of 64.
#[must_use]
pub fn header(dtype: Dtype, len: usize) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({len},), }}",
        dtype.descr()
    );
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let hlen = total - MAGIC.len() - 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    #[allow(clippy::cast_possible_truncation)]
    out.extend_from_slice(&(hlen as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Parse a header written by [`header`]: returns (element count, data offset).
///
/// # Errors
/// [`SftError::Shard`] naming `what` when the bytes are not a 1-D C-order array of `dtype`.
pub fn parse(bytes: &[u8], dtype: Dtype, what: &str) -> Result<(usize, usize)> {
    let bad = |why: &str| SftError::Shard(format!("{what}: not a sftfast .npy array: {why}"));
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the NumPy magic"));
    }
    if bytes[6] != 1 {
        return Err(bad(&format!("format version {}.{}", bytes[6], bytes[7])));
    }
    let hlen = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let start = 10 + hlen;
    if bytes.len() < start {
        return Err(bad("truncated header"));
    }
    let dict = std::str::from_utf8(&bytes[10..start]).map_err(|_| bad("header is not text"))?;
    let descr = format!("'descr': '{}'", dtype.descr());
    if !dict.contains(&descr) {
        return Err(bad(&format!(
            "expected dtype {}, header {dict:?}",
            dtype.descr()
        )));
    }
    if !dict.contains("'fortran_order': False") {
        return Err(bad("Fortran order"));
    }
    let shape = dict
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| bad(&format!("expected a 1-D shape, header {dict:?}")))?;
    let need = start + shape * dtype.size();
    if bytes.len() != need {
        return Err(bad(&format!(
            "expected {need} bytes for {shape} elements, found {}",
            bytes.len()
        )));
    }
    Ok((shape, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_alignment() {
        for (dt, n) in [
            (Dtype::U32, 0usize),
            (Dtype::I32, 7),
            (Dtype::U64, 123_456_789),
        ] {
            let h = header(dt, n);
            assert_eq!(h.len() % 64, 0);
            let mut bytes = h.clone();
            bytes.resize(h.len() + n.min(1000) * dt.size(), 0);
            if n <= 1000 {
                assert_eq!(parse(&bytes, dt, "t").unwrap(), (n, h.len()));
            } else {
                assert!(parse(&bytes, dt, "t").is_err());
            }
        }
        let h = header(Dtype::U32, 3);
        assert!(parse(&h, Dtype::I32, "t").is_err());
        assert!(parse(b"garbage...", Dtype::U32, "t").is_err());
    }
}
