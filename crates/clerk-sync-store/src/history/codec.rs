//! How a body is stored: one format byte, then the body compressed in LZ4's block format with its
//! length in front. LZ4 because it costs the worker a few microseconds per 2 KB event (the worker
//! shares two cores with Postgres) and still halves Clerk's JSON; the format byte lets a later
//! codec (a trained zstd dictionary, say) be added without rewriting stored rows.

const LZ4: u8 = 1;

/// Compresses `body` for `clerk.event_history.body`.
pub fn encode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 2 + 8);
    out.push(LZ4);
    out.extend_from_slice(&lz4_flex::compress_prepend_size(body));
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty stored body")]
    Empty,
    #[error("stored body cut short")]
    Truncated,
    #[error("unknown stored body format {0}")]
    Format(u8),
    #[error("corrupt stored body: {0}")]
    Corrupt(#[from] lz4_flex::block::DecompressError),
}

/// The body as received, from its stored form.
pub fn decode(stored: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match stored.split_first() {
        None => Err(DecodeError::Empty),
        Some((&LZ4, rest)) => {
            let (size, block) = rest.split_first_chunk::<4>().ok_or(DecodeError::Truncated)?;
            let size = u32::from_le_bytes(*size) as usize;
            let body = lz4_flex::block::decompress(block, size)?;
            // A block cut short can decode to fewer bytes without an error.
            if body.len() == size { Ok(body) } else { Err(DecodeError::Truncated) }
        }
        Some((&other, _)) => Err(DecodeError::Format(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_comes_back_exactly_and_smaller() {
        let body = clerk_sync_core::samples::sample("user.updated", 1_716_883_200_000).unwrap().to_string();
        let stored = encode(body.as_bytes());
        assert!(stored.len() < body.len() * 3 / 4, "{} of {}", stored.len(), body.len());
        assert_eq!(decode(&stored).unwrap(), body.as_bytes());
        assert!(matches!(decode(&[9, 1, 2]), Err(DecodeError::Format(9))));
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(decode(&stored[..stored.len() / 2]).is_err(), "a truncated body is an error, not garbage");
    }
}
