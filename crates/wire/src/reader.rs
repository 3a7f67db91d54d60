//! A zero-copy protobuf reader: varints, fixed64 and length-delimited fields over a borrowed
//! slice. It is all the hot path needs; allocation-free and panic-free on any input.

use crate::error::Malformed;

/// Protobuf wire types (groups are obsolete and rejected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// A cursor over one message's bytes. `base` is the offset of `buf[0]` in the whole request so
/// that errors can say where they are.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// The offset of the cursor in the whole request.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn err(&self, kind: Malformed) -> (Malformed, usize) {
        (kind, self.offset())
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    #[inline]
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, WireType)>, (Malformed, usize)> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.offset();
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err((Malformed::FieldNumber(number), at));
        }
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            w => return Err((Malformed::WireType(w as u8), at)),
        };
        Ok(Some((number as u32, wire)))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, (Malformed, usize)> {
        // Most varints on this wire (tags, lengths, small indexes) are one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, (Malformed, usize)> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(Malformed::Truncated));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(self.err(Malformed::VarintTooLong))
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, (Malformed, usize)> {
        let end = self.pos + 8;
        let Some(bytes) = self.buf.get(self.pos..end) else {
            return Err(self.err(Malformed::Truncated));
        };
        self.pos = end;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(b))
    }

    /// A length-delimited payload, borrowed.
    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], (Malformed, usize)> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.err(Malformed::Truncated))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err(Malformed::Truncated))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A length-delimited payload as a reader positioned at its start.
    #[inline]
    pub(crate) fn message(&mut self) -> Result<Reader<'a>, (Malformed, usize)> {
        let len_at = self.pos;
        let payload = self.bytes()?;
        // The payload starts after the length varint.
        let start = self.pos - payload.len();
        debug_assert!(start >= len_at);
        Ok(Reader {
            buf: payload,
            pos: 0,
            base: self.base + start,
        })
    }

    /// Skips a field's value of wire type `wire`.
    pub(crate) fn skip(&mut self, wire: WireType) -> Result<(), (Malformed, usize)> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.fixed64().map(drop),
            WireType::Len => self.bytes().map(drop),
            WireType::Fixed32 => {
                let end = self.pos + 4;
                if end > self.buf.len() {
                    return Err(self.err(Malformed::Truncated));
                }
                self.pos = end;
                Ok(())
            }
        }
    }

    /// Fails unless the field has wire type `want`.
    #[inline]
    pub(crate) fn expect(
        &self,
        field: u32,
        got: WireType,
        want: WireType,
    ) -> Result<(), (Malformed, usize)> {
        if got == want {
            Ok(())
        } else {
            Err(self.err(Malformed::FieldWireType { field }))
        }
    }
}

/// Decodes a zigzag-encoded `sint32` from a varint, rejecting values beyond 32 bits.
#[inline]
pub(crate) fn zigzag32(v: u64) -> Option<i32> {
    let v = u32::try_from(v).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag() {
        let mut r = Reader::new(&[0xac, 0x02, 0x03]);
        assert_eq!(r.varint(), Ok(300));
        assert_eq!(r.varint(), Ok(3));
        assert_eq!(r.varint(), Err((Malformed::Truncated, 3)));
        assert_eq!(zigzag32(0), Some(0));
        assert_eq!(zigzag32(1), Some(-1));
        assert_eq!(zigzag32(2), Some(1));
        assert_eq!(zigzag32(0xffff_fffe), Some(i32::MAX));
        assert_eq!(zigzag32(0xffff_ffff), Some(i32::MIN));
        assert_eq!(zigzag32(1 << 32), None);
    }

    #[test]
    fn rejects_bad_lengths_and_wire_types() {
        let mut r = Reader::new(&[0x0a, 0x05, b'a']);
        assert_eq!(r.next_field(), Ok(Some((1, WireType::Len))));
        assert_eq!(r.bytes(), Err((Malformed::Truncated, 2)));
        let mut r = Reader::new(&[0x0b]);
        assert_eq!(r.next_field(), Err((Malformed::WireType(3), 0)));
        let mut r = Reader::new(&[0x00]);
        assert_eq!(r.next_field(), Err((Malformed::FieldNumber(0), 0)));
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.varint(), Err((Malformed::VarintTooLong, 10)));
    }

    #[test]
    fn nested_offsets_are_absolute() {
        let mut r = Reader::new(&[0x0a, 0x02, 0x08, 0x80]);
        r.next_field().unwrap();
        let mut inner = r.message().unwrap();
        assert_eq!(inner.offset(), 2);
        inner.next_field().unwrap();
        assert_eq!(inner.varint(), Err((Malformed::Truncated, 4)));
    }
}
