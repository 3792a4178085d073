//! A received binary message's bytes, owned by the message alone. JS is given a large one as an
//! external Buffer over this memory, which it may write (`napi_raw::external_buffer`): unlike
//! `Bytes`, whose clones share their memory and promise it never changes, a `Payload` has one
//! owner and hands out `&mut [u8]`, so the type says that no other handle views what JS writes.

use std::fmt;
use std::ops::Deref;

use bytes::{Bytes, BytesMut};

use crate::recycle::{self, Pooled};

pub enum Payload {
    /// A large message read into a buffer of the recycle pool (it goes back when dropped).
    Pooled(Pooled),
    /// Any other: a range split off the read buffer (`BytesMut` views it alone), a copy, a
    /// fragmented message's joined pieces, an inflated message.
    Owned(BytesMut),
}

impl Payload {
    pub fn copy_from(bytes: &[u8]) -> Self {
        Payload::Owned(BytesMut::from(bytes))
    }

    /// A pooled buffer.
    pub fn pooled(v: Vec<u8>) -> Self {
        Payload::Pooled(recycle::pooled(v))
    }

    /// As a vector, for the first fragment of a message whose next ones are appended to it: a
    /// pooled buffer leaves the pool without a copy.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Pooled(p) => p.into_vec(),
            Payload::Owned(b) => b.into(),
        }
    }

    /// As shared, immutable bytes, for a frame that is not a binary message (text, a control
    /// frame, a compressed message): no copy.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Payload::Pooled(p) => Bytes::from_owner(p),
            Payload::Owned(b) => b.freeze(),
        }
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Pooled(p) => p.as_ref(),
            Payload::Owned(b) => b,
        }
    }
}

impl AsMut<[u8]> for Payload {
    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Payload::Pooled(p) => p.as_mut(),
            Payload::Owned(b) => b,
        }
    }
}

impl From<Vec<u8>> for Payload {
    /// No copy (`Bytes` of a vector alone is unique: `BytesMut` takes it back).
    fn from(v: Vec<u8>) -> Self {
        Payload::Owned(BytesMut::from(Bytes::from(v)))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_or_a_range_of_the_read_buffer_becomes_a_payload_without_a_copy() {
        let mut v = Vec::with_capacity(100);
        v.extend_from_slice(&[1; 60]);
        let at = v.as_ptr();
        let mut p = Payload::from(v);
        assert_eq!((p.as_mut().as_ptr(), p.len()), (at, 60));

        let mut buf = BytesMut::from(&[2; 100][..]);
        let at = buf.as_ptr();
        let mut p = Payload::Owned(buf.split_to(40));
        p.as_mut()[0] = 3;
        assert_eq!(
            (p.as_ptr(), p.len(), buf[0]),
            (at, 40, 2),
            "the rest of the buffer is another range"
        );
        let b = p.into_bytes();
        assert_eq!(
            (b.as_ptr(), b[0]),
            (at, 3),
            "shared bytes for a control frame or text: no copy"
        );
    }

    #[test]
    fn a_pooled_payload_shares_its_buffer_without_a_copy() {
        let mut v = recycle::take(20_000);
        v.extend_from_slice(&[5; 20_000]);
        let at = v.as_ptr();
        let p = Payload::pooled(v);
        assert_eq!(p.as_ptr(), at);
        let b = p.into_bytes();
        assert_eq!((b.as_ptr(), b.len()), (at, 20_000));
        let mut v = recycle::take(20_000);
        v.extend_from_slice(&[6; 20_000]);
        let at = v.as_ptr();
        let v = Payload::pooled(v).into_vec();
        assert_eq!(
            (v.as_ptr(), v.len()),
            (at, 20_000),
            "a first fragment's buffer, taken whole"
        );
    }
}
