//! The count buckets of one key, delta-coded in one small byte string.
//!
//! A key active every hour for a week has 168 occupied buckets. Held as a `Vec<(u32, u32)>` they
//! cost 8 bytes each plus the vector's doubling slack (~2.2 kB a key, measured); here the newest
//! bucket lives inline in the key's state and every older one is one *token* in a byte string,
//! its bucket index coded as the gap from the previous one:
//!
//! | token | meaning |
//! |---|---|
//! | `0x01..=0x7f` | the next bucket (gap 1), count = token |
//! | `0x80..=0xff` | gap = token − 0x80 + 2 (2 to 129), count 1 |
//! | `0x00` | escape: varint gap, then varint count (`varint` = LEB128) |
//!
//! The first entry's gap is from bucket 0 (its absolute index). With the default hourly buckets
//! an hourly key costs 1 byte a bucket, a sparser or busier one 1–3 bytes.
//!
//! Layout of the heap string: a 12-byte header — used length, entry count, bucket of the last
//! entry (all `u32` little-endian) — then the tokens; its capacity is the box length, grown by a
//! quarter at a time in sizes that fill glibc's 16-byte chunks. A key with a single bucket holds
//! no heap memory at all. Nearly every event lands in the newest bucket (a counter increment) or
//! opens the next one (one token appended); a late event behind the newest bucket re-codes at
//! most two tokens in place.

/// Marks an escaped (general) token.
const ESCAPE: u8 = 0;
/// Header bytes before the tokens: used length, entries, last entry's bucket.
const HEADER: usize = 12;
/// Longest token: escape byte and two 5-byte varints.
const MAX_TOKEN: usize = 11;

/// One encoded token.
struct Token {
    bytes: [u8; MAX_TOKEN],
    len: usize,
}

impl Token {
    fn new(gap: u32, count: u32) -> Self {
        let mut t = Token { bytes: [0; MAX_TOKEN], len: 1 };
        if gap == 1 && (1..0x80).contains(&count) {
            t.bytes[0] = count as u8;
        } else if count == 1 && (2..=129).contains(&gap) {
            t.bytes[0] = 0x80 + (gap - 2) as u8;
        } else {
            t.bytes[0] = ESCAPE;
            for mut v in [gap, count] {
                while v >= 0x80 {
                    t.bytes[t.len] = (v as u8) | 0x80;
                    t.len += 1;
                    v >>= 7;
                }
                t.bytes[t.len] = v as u8;
                t.len += 1;
            }
        }
        t
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads a varint at `*pos`; `None` past the end or beyond `u32`.
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v = 0u64;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return u32::try_from(v).ok();
        }
    }
    None
}

/// Reads the token at `*pos`: `(gap, count)`; `None` if it is cut short or malformed.
fn token(bytes: &[u8], pos: &mut usize) -> Option<(u32, u32)> {
    let b = *bytes.get(*pos)?;
    *pos += 1;
    match b {
        ESCAPE => Some((varint(bytes, pos)?, varint(bytes, pos)?)),
        0x01..=0x7f => Some((1, u32::from(b))),
        _ => Some((u32::from(b - 0x80) + 2, 1)),
    }
}

/// Glibc hands out chunks of 16-byte multiples with 8 bytes of overhead: sizes of 16k + 8
/// waste nothing. At least 24.
fn size_class(need: usize) -> usize {
    (((need + 8 + 15) & !15) - 8).max(24)
}

/// Sparse `(bucket index, count)` pairs of one key, oldest first, no zero counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Buckets {
    /// Header and tokens of every bucket but the newest; empty (no allocation) when there is
    /// none.
    buf: Box<[u8]>,
    /// The newest bucket's index.
    newest: u32,
    /// Its count; 0 when the key has no bucket at all.
    newest_count: u32,
}

impl Buckets {
    fn header(&self, i: usize) -> u32 {
        if self.buf.is_empty() {
            return 0;
        }
        u32::from_le_bytes(self.buf[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
    }

    fn set_header(&mut self, len: usize, entries: u32, last: u32) {
        for (i, v) in [len as u32, entries, last].into_iter().enumerate() {
            self.buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// The tokens in use.
    fn tokens(&self) -> &[u8] {
        let len = self.header(0) as usize;
        if len == 0 {
            return &[];
        }
        &self.buf[HEADER..HEADER + len]
    }

    /// Entries in the token string (every bucket but the newest).
    fn entries(&self) -> u32 {
        self.header(1)
    }

    /// Replaces tokens `start..end` by `new`, changing the entry count by `added` and setting
    /// the last entry's bucket to `last`; grows the string by a quarter when it is full.
    fn splice(&mut self, start: usize, end: usize, new: &[u8], added: i32, last: u32) {
        let (len, entries) = (self.header(0) as usize, self.entries());
        let new_len = len - (end - start) + new.len();
        if HEADER + new_len > self.buf.len() {
            let cap = size_class((HEADER + new_len).max(self.buf.len() + self.buf.len() / 4));
            let mut grown = vec![0u8; cap].into_boxed_slice();
            if !self.buf.is_empty() {
                grown[..HEADER + len].copy_from_slice(&self.buf[..HEADER + len]);
            }
            self.buf = grown;
        }
        self.buf.copy_within(HEADER + end..HEADER + len, HEADER + start + new.len());
        self.buf[HEADER + start..HEADER + start + new.len()].copy_from_slice(new);
        self.set_header(new_len, entries.wrapping_add_signed(added), last);
    }

    /// Drops the token string's memory when it is empty, or its slack when it holds less than
    /// half its capacity (the key went quieter and older buckets expired).
    fn trim(&mut self) {
        let used = HEADER + self.header(0) as usize;
        if self.entries() == 0 {
            self.buf = Box::default();
        } else if used * 2 < self.buf.len() && size_class(used) < self.buf.len() {
            let mut small = vec![0u8; size_class(used)].into_boxed_slice();
            small[..used].copy_from_slice(&self.buf[..used]);
            self.buf = small;
        }
    }

    /// Counts one event in `bucket`.
    pub fn add(&mut self, bucket: u32) {
        if self.newest_count == 0 {
            (self.newest, self.newest_count) = (bucket, 1);
        } else if bucket == self.newest {
            self.newest_count = self.newest_count.saturating_add(1);
        } else if bucket > self.newest {
            // Close the newest bucket: one token appended.
            let (prev, end) = (self.last_entry(), self.tokens().len());
            let t = Token::new(self.newest - prev, self.newest_count);
            self.splice(end, end, t.as_slice(), 1, self.newest);
            (self.newest, self.newest_count) = (bucket, 1);
        } else {
            self.add_late(bucket);
        }
    }

    /// The last entry's bucket (0 when there is none: the first entry's gap is absolute).
    fn last_entry(&self) -> u32 {
        self.header(2)
    }

    /// Counts an event in a bucket older than the newest: re-codes the entry it falls in, or
    /// inserts one and re-codes the entry after it (its gap shrinks).
    fn add_late(&mut self, bucket: u32) {
        let last = self.last_entry();
        let (mut pos, mut prev) = (0usize, 0u32);
        while pos < self.tokens().len() {
            let start = pos;
            let (gap, count) = token(self.tokens(), &mut pos).expect("well-formed tokens");
            let b = prev + gap;
            if b == bucket {
                let t = Token::new(gap, count.saturating_add(1));
                self.splice(start, pos, t.as_slice(), 0, last);
                return;
            }
            if b > bucket {
                let (a, c) = (Token::new(bucket - prev, 1), Token::new(b - bucket, count));
                let mut both = [0u8; 2 * MAX_TOKEN];
                both[..a.len].copy_from_slice(a.as_slice());
                both[a.len..a.len + c.len].copy_from_slice(c.as_slice());
                self.splice(start, pos, &both[..a.len + c.len], 1, last);
                return;
            }
            prev = b;
        }
        let end = self.tokens().len();
        self.splice(end, end, Token::new(bucket - prev, 1).as_slice(), 1, bucket);
    }

    /// Drops buckets before `oldest`; true when nothing is left.
    pub fn expire(&mut self, oldest: u32) -> bool {
        if self.newest_count == 0 || self.newest < oldest {
            *self = Self::default();
            return true;
        }
        let (mut pos, mut b) = (0usize, 0u32);
        let mut dropped = 0;
        while pos < self.tokens().len() {
            let (gap, count) = token(self.tokens(), &mut pos).expect("well-formed tokens");
            b += gap;
            if b >= oldest {
                if dropped > 0 {
                    // The first kept entry's gap becomes absolute.
                    let last = self.last_entry();
                    self.splice(0, pos, Token::new(b, count).as_slice(), -dropped, last);
                    self.trim();
                }
                return false;
            }
            dropped += 1;
        }
        // Every older entry expired; only the newest bucket is left.
        self.buf = Box::default();
        false
    }

    /// Occupied buckets.
    pub fn len(&self) -> usize {
        self.entries() as usize + usize::from(self.newest_count > 0)
    }

    /// The pairs, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            tokens: self.tokens(),
            pos: 0,
            prev: 0,
            newest: (self.newest_count > 0).then_some((self.newest, self.newest_count)),
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The newest bucket, its count and the tokens of the others, for a snapshot.
    pub fn encoded(&self) -> (u32, u32, u32, &[u8]) {
        (self.newest, self.newest_count, self.entries(), self.tokens())
    }

    /// Rebuilds from [`Buckets::encoded`]'s parts, checking every token: `None` unless they
    /// hold `entries` strictly increasing buckets with non-zero counts, all before the newest.
    pub fn from_encoded(
        newest: u32,
        newest_count: u32,
        entries: u32,
        tokens: &[u8],
    ) -> Option<Self> {
        let (mut pos, mut prev, mut n) = (0usize, 0u32, 0u32);
        while pos < tokens.len() {
            let (gap, count) = token(tokens, &mut pos)?;
            if (n > 0 && gap == 0) || count == 0 {
                return None;
            }
            prev = prev.checked_add(gap)?;
            n += 1;
        }
        if n != entries || (n > 0 && prev >= newest) {
            return None;
        }
        if newest_count == 0 {
            return (n == 0).then(Self::default);
        }
        let mut out = Self { buf: Box::default(), newest, newest_count };
        if n > 0 {
            out.splice(0, 0, tokens, n as i32, prev);
        }
        Some(out)
    }

    /// Builds from pairs that are strictly increasing in bucket with non-zero counts (a
    /// version-1 snapshot's); `None` otherwise.
    pub fn from_pairs(pairs: &[(u32, u32)]) -> Option<Self> {
        let mut out = Self::default();
        let Some((&(newest, newest_count), older)) = pairs.split_last() else {
            return Some(out);
        };
        let mut tokens = Vec::with_capacity(older.len() + 4);
        let mut prev = 0u32;
        for (i, &(b, n)) in older.iter().enumerate() {
            if (i > 0 && b <= prev) || n == 0 {
                return None;
            }
            tokens.extend_from_slice(Token::new(b - prev, n).as_slice());
            prev = b;
        }
        if newest_count == 0 || (!older.is_empty() && newest <= prev) {
            return None;
        }
        (out.newest, out.newest_count) = (newest, newest_count);
        if !older.is_empty() {
            out.splice(0, 0, &tokens, older.len() as i32, prev);
        }
        Some(out)
    }
}

/// The pairs of a [`Buckets`], oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Iter<'a> {
    tokens: &'a [u8],
    pos: usize,
    prev: u32,
    newest: Option<(u32, u32)>,
}

impl Iterator for Iter<'_> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        if self.pos < self.tokens.len() {
            let (gap, count) = token(self.tokens, &mut self.pos).expect("well-formed tokens");
            self.prev += gap;
            return Some((self.prev, count));
        }
        self.newest.take()
    }
}
