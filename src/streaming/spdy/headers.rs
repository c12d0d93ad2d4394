//! SPDY/3 header blocks (kubelet-api-protocols.md §3.6.2, §3.6.4): the name/value layout and
//! the zlib contexts with the SPDY/3 dictionary. Each direction of a connection has one zlib
//! stream that is never reset, so one `HeaderCompressor` and one `HeaderDecompressor` live as
//! long as the connection and must see every block of their direction in order.
//!
//! This file depends only on `flate2` and `thiserror` so the fuzz crate can include it directly.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header compression dictionary (SPDY draft 3 §2.6.10.1; byte-identical to
/// moby/spdystream's `headerDictionary`).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3-dictionary.bin");
/// The dictionary's Adler-32: the DICTID a peer's first block names.
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;
/// Largest decompressed header block accepted (a few streamtype/port/requestid headers are
/// tens of bytes; the cap stops a small compressed block from expanding without bound).
pub const MAX_BLOCK_LEN: usize = 1 << 20;

/// A header block that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("inflating a header block: {0}")]
    Inflate(#[source] flate2::DecompressError),
    #[error("the peer's header block names dictionary {id:#010x}, not the SPDY/3 dictionary")]
    WrongDictionary { id: u32 },
    #[error("setting the SPDY/3 dictionary: {0}")]
    SetDictionary(String),
    #[error("the peer ended its header compression stream")]
    StreamEnded,
    #[error("inflating a header block made no progress")]
    Stalled,
    #[error("header block larger than {MAX_BLOCK_LEN} bytes")]
    TooLarge,
    #[error("header block truncated at byte {at}")]
    Truncated { at: usize },
    #[error("{extra} bytes after the header block's last pair")]
    TrailingBytes { extra: usize },
    #[error("empty header name")]
    EmptyName,
    #[error("deflating a header block: {0}")]
    Deflate(#[source] flate2::CompressError),
}

/// Header pairs in order; a name with several values appears once per value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value (names are lower-cased: SPDY/3 requires it).
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// The first value of `name`, compared case-insensitively (Go canonicalises received names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed block: `u32 count`, then per name `u32 len, name, u32 len, value`,
    /// several values of one name joined by NUL (Go refuses duplicate names).
    pub fn to_raw(&self) -> Vec<u8> {
        let mut names: Vec<(&str, Vec<&str>)> = Vec::new();
        for (n, v) in &self.0 {
            match names.iter_mut().find(|(m, _)| m == n) {
                Some((_, vs)) => vs.push(v),
                None => names.push((n, vec![v])),
            }
        }
        let mut out = Vec::new();
        put_u32(&mut out, names.len());
        for (n, vs) in names {
            put_u32(&mut out, n.len());
            out.extend_from_slice(n.as_bytes());
            let v = vs.join("\0");
            put_u32(&mut out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block; it must end exactly after the last pair, as Go requires.
    pub fn from_raw(raw: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader { raw, at: 0 };
        let count = r.u32()? as usize;
        // Each pair takes at least 8 bytes, which bounds the allocation by the input.
        let mut out = Vec::with_capacity(count.min(raw.len() / 8));
        for _ in 0..count {
            let name = r.string()?;
            if name.is_empty() {
                return Err(HeaderError::EmptyName);
            }
            let name = name.to_ascii_lowercase();
            let value = r.string()?;
            for v in value.split('\0') {
                out.push((name.clone(), v.to_string()));
            }
        }
        if r.at != raw.len() {
            return Err(HeaderError::TrailingBytes {
                extra: raw.len() - r.at,
            });
        }
        Ok(Self(out))
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Header names and values are tiny; a length past u32 cannot come from keel's own headers.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

struct Reader<'a> {
    raw: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], HeaderError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.raw.len())
            .ok_or(HeaderError::Truncated { at: self.at })?;
        let s = &self.raw[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let n = self.u32()? as usize;
        // Go does not validate UTF-8 either; a lossy copy keeps odd bytes visible in logs.
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

/// The receiving direction's zlib context.
pub struct HeaderDecompressor {
    inflate: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
        }
    }

    /// Inflates one frame's block and parses it. The peer's first block asks for the
    /// dictionary (its FDICT bit); later ones continue the same stream.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate_block(block)?;
        Headers::from_raw(&raw)
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(block.len().saturating_mul(4).clamp(64, 4096));
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK_LEN {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(out.len().max(256));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let res = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.inflate.total_in() - in_before).unwrap_or(input.len());
            input = input.get(consumed..).unwrap_or_default();
            match res {
                Ok(Status::StreamEnd) => {
                    // Go never ends the stream; later blocks could not be inflated anyway.
                    return Err(HeaderError::StreamEnded);
                }
                Ok(Status::Ok | Status::BufError) => {
                    let room_left = out.len() < out.capacity();
                    if input.is_empty() && room_left {
                        // Sync flush: everything the block encodes has been written out.
                        return Ok(out);
                    }
                    if consumed == 0 && out.len() == out_before && room_left {
                        return Err(HeaderError::Stalled);
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.inflate
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| HeaderError::SetDictionary(e.to_string()))?;
                    }
                    Some(id) => return Err(HeaderError::WrongDictionary { id }),
                    None => return Err(HeaderError::Inflate(e)),
                },
            }
        }
    }
}

/// The sending direction's zlib context: level 9 with the dictionary, as Go writes (the
/// dictionary is optional for Go readers, but it keeps blocks byte-for-byte close to Go's).
pub struct HeaderCompressor {
    deflate: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Result<Self, HeaderError> {
        let mut deflate = Compress::new(Compression::new(9), true);
        deflate
            .set_dictionary(DICTIONARY)
            .map_err(|e| HeaderError::SetDictionary(e.to_string()))?;
        Ok(Self { deflate })
    }

    /// Compresses one block, ending it with a sync flush (`00 00 ff ff`).
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        let raw = headers.to_raw();
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(HeaderError::Deflate)?;
            let consumed = usize::try_from(self.deflate.total_in() - before).unwrap_or(input.len());
            input = input.get(consumed..).unwrap_or_default();
            // Done once all input is in and the flush fitted (room left in the buffer).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.push(n, v);
        }
        h
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        let sha = ring::digest::digest(&ring::digest::SHA256, DICTIONARY);
        assert_eq!(
            hex::encode(sha.as_ref()),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
    }

    #[test]
    fn decodes_the_captured_client_blocks_in_sequence() {
        let mut d = HeaderDecompressor::new();
        for (block, value) in [
            (
                "78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff",
                "error",
            ),
            ("c22e555c92929907000000ffff", "stdin"),
            ("c22ac5565c92925f5a02000000ffff", "stdout"),
            ("c229975a5404000000ffff", "stderr"),
        ] {
            let got = d.decompress(&hex::decode(block).unwrap()).unwrap();
            assert_eq!(got, h(&[("streamtype", value)]));
        }
    }

    #[test]
    fn decodes_the_captured_port_forward_blocks() {
        let mut d = HeaderDecompressor::new();
        let first = d
            .decompress(
                &hex::decode(
                    "78f9e3c6a7c202253a060606ce2248fc6482d22da30138e59514a526e6420b17d65450d0430aea22709eb030b03000000000ffff",
                )
                .unwrap(),
            )
            .unwrap();
        assert_eq!(first.get("Port"), Some("8080"));
        assert_eq!(first.get("requestid"), Some("0"));
        assert_eq!(first.get("streamtype"), Some("error"));
        let second = d
            .decompress(&hex::decode("826a46550a2a8712b1a844b302000000ffff").unwrap())
            .unwrap();
        assert_eq!(second.get("streamtype"), Some("data"));
        assert_eq!(second.get("port"), Some("8080"));
    }

    #[test]
    fn decodes_the_go_server_reply_blocks() {
        let mut d = HeaderDecompressor::new();
        for block in [
            "78f9e3c6a7c26260606000000000ffff",
            "026100000000ffff",
            "026100000000ffff",
        ] {
            assert!(d.decompress(&hex::decode(block).unwrap()).unwrap().is_empty());
        }
    }

    #[test]
    fn compresses_the_blocks_go_accepted() {
        // §3.6.4: flate2/zlib-rs output that the Go framer decoded.
        let mut c = HeaderCompressor::new().unwrap();
        assert_eq!(
            hex::encode(c.compress(&Headers::new()).unwrap()),
            "78f9e3c6a7c202a6230600000000ffff"
        );
        assert_eq!(
            hex::encode(c.compress(&h(&[("port", "8080")])).unwrap()),
            "02024648195c044eee1606160600000000ffff"
        );
    }

    #[test]
    fn round_trips_through_both_contexts() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut d = HeaderDecompressor::new();
        let long = "x".repeat(70_000);
        for hs in [
            h(&[("streamtype", "error"), ("port", "80"), ("requestid", "12")]),
            Headers::new(),
            h(&[("a", "1"), ("A", "2"), ("b", "")]),
            h(&[("big", &long)]),
        ] {
            let block = c.compress(&hs).unwrap();
            assert!(block.ends_with(&[0, 0, 0xff, 0xff]));
            assert_eq!(d.decompress(&block).unwrap(), hs);
        }
    }

    #[test]
    fn raw_layout_and_its_errors() {
        let raw = h(&[("streamtype", "error")]).to_raw();
        assert_eq!(
            hex::encode(&raw),
            "000000010000000a73747265616d74797065000000056572726f72"
        );
        assert!(matches!(
            Headers::from_raw(&raw[..raw.len() - 1]),
            Err(HeaderError::Truncated { .. })
        ));
        let mut extra = raw.clone();
        extra.push(0);
        assert!(matches!(
            Headers::from_raw(&extra),
            Err(HeaderError::TrailingBytes { extra: 1 })
        ));
        assert!(matches!(
            Headers::from_raw(&hex::decode("ffffffff").unwrap()),
            Err(HeaderError::Truncated { .. })
        ));
        assert!(matches!(
            Headers::from_raw(&hex::decode("000000010000000000000000").unwrap()),
            Err(HeaderError::EmptyName)
        ));
        // Values joined by NUL come back as separate values.
        let multi = Headers::from_raw(&hex::decode("00000001000000016100000003310032").unwrap()).unwrap();
        assert_eq!(multi, h(&[("a", "1"), ("a", "2")]));
    }

    #[test]
    fn garbage_blocks_are_errors() {
        for bad in ["", "00", "789c", "78f9deadbeef", "ffffffffffff", "78f9e3c6a7c2ffffffff"] {
            let mut d = HeaderDecompressor::new();
            assert!(d.decompress(&hex::decode(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_blocks_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let valid = hex::decode("78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff").unwrap();
        for _ in 0..3000 {
            let mut d = HeaderDecompressor::new();
            // Either pure noise, or a valid first block with a few bytes flipped.
            let block: Vec<u8> = if rng.random_bool(0.5) {
                let len = rng.random_range(0..128);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
                b
            };
            let _ = d.decompress(&block);
            let _ = d.decompress(&block);
            let _ = Headers::from_raw(&block);
        }
    }

    #[test]
    fn a_decompression_bomb_is_capped() {
        // 4 MiB of zeros compress to a few KiB; inflating must stop at MAX_BLOCK_LEN.
        let mut c = Compress::new(Compression::new(9), true);
        let zeros = vec![0u8; 4 << 20];
        let mut out = Vec::with_capacity(64 << 10);
        c.compress_vec(&zeros, &mut out, FlushCompress::Sync).unwrap();
        assert_eq!(c.total_in() as usize, zeros.len());
        let mut d = HeaderDecompressor::new();
        assert!(matches!(d.decompress(&out), Err(HeaderError::TooLarge)));
    }
}
